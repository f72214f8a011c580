//! Cost of one blind index and of the tokens of a 30-byte value.
use pazpaz_core::blind_index::{IndexKey, Kind};
fn main() {
    let key = IndexKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let mut d = key.derive(Kind::Exact, b"ctx");
    let v = b"0123456789abcdef0123456789abcd";
    let n = 1_000_000;
    let t = std::time::Instant::now();
    let mut x = 0u8;
    for _ in 0..n {
        x ^= d.blind_index(v, 256)[0];
    }
    println!("blind_index: {:.1} ns ({x})", t.elapsed().as_nanos() as f64 / n as f64);
    let mut d = key.derive(Kind::Tokens, b"ctx");
    let t = std::time::Instant::now();
    for _ in 0..10_000 {
        x ^= d.tokens("0123456789abcdef0123456789abcd", 20).unwrap()[0] as u8;
    }
    println!("tokens: {:.1} ns ({x})", t.elapsed().as_nanos() as f64 / 10_000.0);
}
