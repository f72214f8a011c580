//! Nanoseconds per AES-256-GCM field operation (format 1, the work every
//! format shares), for comparing builds of the same code with different CPU
//! targets: scripts/cpu_cost.sh builds this three ways and runs them in turn.
//!
//!     cargo run --release -p pazpaz_core --example cipher_cost [rounds]

use std::hint::black_box;
use std::time::Instant;

use pazpaz_core::{field, keyring::Keyring};

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    // A fixed test key (not a secret).
    let ring = Keyring::from_single_key("bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE=").unwrap();
    let cipher = ring.current().unwrap().cipher();
    let nonce = [7u8; 12];
    for size in [100usize, 5000] {
        let plain = vec![b'x'; size];
        let mut sealed = vec![0u8; field::sealed_len(size).unwrap()];
        let mut opened = vec![0u8; size];
        let iters = 20_000_000 / (size + 200);
        let mut enc = Vec::new();
        let mut dec = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..iters {
                field::encrypt_into(cipher, &nonce, black_box(&plain), b"", &mut sealed).unwrap();
            }
            enc.push(t.elapsed().as_nanos() as f64 / iters as f64);
            let t = Instant::now();
            for _ in 0..iters {
                field::decrypt_into(cipher, black_box(&sealed), b"", &mut opened).unwrap();
            }
            dec.push(t.elapsed().as_nanos() as f64 / iters as f64);
        }
        println!("encrypt {size} {:.1}", median(&mut enc));
        println!("decrypt {size} {:.1}", median(&mut dec));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
