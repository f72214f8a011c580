//! Key material is wiped when a key is dropped: inspects the memory of a
//! key's cipher state (AES round keys, GHASH key) after dropping it in place.

use std::mem::{size_of, MaybeUninit};

use pazpaz_core::data_key::Key;
use pazpaz_core::Cipher;

#[test]
fn cipher_state_is_zero_after_drop() {
    let mut slot = MaybeUninit::<Key>::uninit();
    let key = slot.write(Key::from_base64("bMz1Y4AHud4S70SS7t8UyrpTbNpwEC5kGFbDbyOoiTE=").unwrap());
    let cipher: *const Cipher = key.cipher();
    let len = size_of::<Cipher>();
    // SAFETY: `cipher` points into `slot`, which lives to the end of the
    // test, `len` bytes long; after the drop its bytes are only read.
    let view = || unsafe { std::slice::from_raw_parts(cipher.cast::<u8>(), len) }.to_vec();
    let before = view();
    assert!(before.iter().filter(|&&b| b != 0).count() > len / 4, "round keys present before the drop");
    // SAFETY: the slot is initialised and dropped exactly once; afterwards its
    // bytes are only read, never used as a Key.
    unsafe { slot.assume_init_drop() };
    let after = view();
    assert!(
        after.iter().all(|&b| b == 0),
        "{} of {len} bytes left after drop",
        after.iter().filter(|&&b| b != 0).count()
    );
}
