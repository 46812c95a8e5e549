//! VNC Authentication (security type 2): the server sends a 16-byte challenge and
//! the client returns it DES-encrypted with the password as key.
//!
//! The quirk every implementation must copy: the key is the password's first 8
//! bytes (zero-padded), each byte with its bits reversed, because the original
//! code fed DES its key least-significant bit first.

use std::fmt;

use des::Des;
use des::cipher::{Array, BlockCipherEncrypt, KeyInit};

/// The length of the challenge and of the response.
pub const CHALLENGE_LEN: usize = 16;

/// The upstream VNC password. Its `Debug` hides it, so it can sit in structs
/// that get logged.
#[derive(Clone, PartialEq, Eq)]
pub struct VncPassword(Vec<u8>);

impl VncPassword {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The DES key: at most 8 bytes of password, zero-padded, bits reversed.
    fn des_key(&self) -> [u8; 8] {
        let mut key = [0u8; 8];
        for (k, p) in key.iter_mut().zip(&self.0) {
            *k = p.reverse_bits();
        }
        key
    }
}

impl fmt::Debug for VncPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VncPassword(<redacted>)")
    }
}

/// The response to a server's challenge: each 8-byte half encrypted on its own
/// (DES in ECB mode).
pub fn response(password: &VncPassword, challenge: &[u8; CHALLENGE_LEN]) -> [u8; CHALLENGE_LEN] {
    let cipher = Des::new(&Array::from(password.des_key()));
    let mut out = *challenge;
    for half in out.chunks_exact_mut(8) {
        let mut block = Array::<u8, _>::try_from(&*half).expect("chunks of 8 bytes");
        cipher.encrypt_block(&mut block);
        half.copy_from_slice(&block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently with OpenSSL:
    // `openssl enc -des-ecb -nopad -K 0e86ceceeef64e26` over bytes 0..16, where
    // 0e86ceceeef64e26 is "password" with each byte bit-reversed.
    #[test]
    fn matches_a_known_vector() {
        let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
        let got = response(&VncPassword::new("password"), &challenge);
        assert_eq!(hex(&got), KNOWN_PASSWORD_RESPONSE);
    }

    #[test]
    fn uses_only_the_first_eight_bytes() {
        let challenge = [0x5a; 16];
        assert_eq!(
            response(&VncPassword::new("12345678"), &challenge),
            response(&VncPassword::new("123456789abc"), &challenge),
        );
        assert_ne!(
            response(&VncPassword::new("1234567"), &challenge),
            response(&VncPassword::new("12345678"), &challenge),
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        assert!(!format!("{:?}", VncPassword::new("hunter2")).contains("hunter2"));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const KNOWN_PASSWORD_RESPONSE: &str = "b866924125c8eebb9debc1db61c538e2";
}
