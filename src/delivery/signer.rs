//! Signatures. Pure: no I/O, no clock.
//!
//! Two schemes, both HMAC-SHA256 over the exact body bytes (CONTRACT section 3):
//! - the original's `X-Webhook-Signature: sha256=<lowercase hex HMAC(secret as UTF-8, body)>`;
//! - Standard Webhooks: `webhook-signature: v1,<base64 HMAC(key, "{id}.{timestamp}.{body}")>`,
//!   the key being the base64-decoded part of a `whsec_` secret, else the secret's UTF-8 bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signing material derived once from a webhook secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Signer {
    /// The secret's UTF-8 bytes (the legacy scheme's key).
    legacy_key: Vec<u8>,
    /// The Standard Webhooks key.
    standard_key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// Derives the keys of `secret`.
    pub fn new(secret: &str) -> Signer {
        let standard_key = secret
            .strip_prefix("whsec_")
            .and_then(decode_base64)
            .unwrap_or_else(|| secret.as_bytes().to_vec());
        Signer {
            legacy_key: secret.as_bytes().to_vec(),
            standard_key,
        }
    }

    /// `sha256=<hex>` for the `X-Webhook-Signature` header.
    ///
    /// ```
    /// use webhook_service::delivery::signer::Signer;
    /// let body = br#"{"event_type":"complete_job","event_id":"wh_1700000000000_abc123def","timestamp":1700000000000,"webhook_id":"wh_1690000000000_zzz999yyy","data":{"job_id":"job-1","worker_id":"worker-1","result":{"ok":true},"completed_at":1700000000000}}"#;
    /// assert_eq!(
    ///     Signer::new("test-secret").legacy(body),
    ///     "sha256=4c10e9ffe3985e7b134d506831f00555f183a87aaa097c8b6890e3de6a6cb397"
    /// );
    /// ```
    pub fn legacy(&self, body: &[u8]) -> String {
        let mut mac = mac(&self.legacy_key);
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256=");
        for byte in digest.iter() {
            out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
        }
        out
    }

    /// `v1,<base64>` for the `webhook-signature` header.
    ///
    /// ```
    /// use webhook_service::delivery::signer::Signer;
    /// let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    /// assert_eq!(
    ///     signer.standard("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
    ///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    /// );
    /// ```
    pub fn standard(&self, msg_id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = mac(&self.standard_key);
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(digest))
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail; an empty key is
    // valid HMAC too.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// Decodes standard base64, with or without padding (the Python verifier adds padding too).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    let padded = format!("{trimmed}{}", "=".repeat((4 - trimmed.len() % 4) % 4));
    STANDARD.decode(padded).ok().filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_vectors() {
        let body = br#"{"event_type":"complete_job","event_id":"wh_1700000000000_abc123def","timestamp":1700000000000,"webhook_id":"wh_1690000000000_zzz999yyy","data":{"job_id":"job-1","worker_id":"worker-1","result":{"ok":true},"completed_at":1700000000000}}"#;
        assert_eq!(
            Signer::new("test-secret").legacy(body),
            "sha256=4c10e9ffe3985e7b134d506831f00555f183a87aaa097c8b6890e3de6a6cb397"
        );
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = signer.standard(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_ne!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=");
    }

    #[test]
    fn a_plain_secret_signs_with_its_utf8_bytes() {
        let plain = Signer::new("test-secret");
        assert_eq!(plain.standard_key, b"test-secret");
        // A whsec_ secret that is not base64 is used as text, not rejected.
        assert_eq!(Signer::new("whsec_!!!").standard_key, b"whsec_!!!");
    }
}
