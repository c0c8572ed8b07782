//! Ids and secrets: `wh_<ms>_<9 base36>` ids as the original makes them, `whsec_` secrets from
//! the operating system's randomness, and the masked form secrets take in listings.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` random base-36 characters.
pub(crate) fn random_base36(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: ids need uniqueness, not secrecy.
        for b in bytes.iter_mut() {
            *b = (crate::rand::unit() * 256.0) as u8;
        }
    }
    bytes
        .iter()
        .map(|b| char::from(BASE36[usize::from(*b) % 36]))
        .collect()
}

/// A new webhook id, `wh_<ms>_<9 base36>`.
pub(crate) fn webhook_id(now_ms: u64) -> String {
    format!("wh_{now_ms}_{}", random_base36(9))
}

/// A new signing secret: `whsec_` and 24 random bytes in standard base64 (Standard Webhooks).
pub(crate) fn secret() -> Result<String, getrandom::Error> {
    let mut key = [0u8; 24];
    getrandom::fill(&mut key)?;
    Ok(format!("whsec_{}", STANDARD.encode(key)))
}

/// The form a secret takes in listings: its prefix and last four characters.
///
/// ```
/// use webhook_service::webhook::ids::mask;
/// assert_eq!(mask("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "whsec_****LaSw");
/// assert_eq!(mask("short"), "****");
/// ```
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 12 {
        return "****".into();
    }
    let head = if secret.starts_with("whsec_") {
        "whsec_"
    } else {
        ""
    };
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_have_their_shapes() {
        let id = webhook_id(1_700_000_000_000);
        assert!(
            id.starts_with("wh_1700000000000_") && id.len() == 26,
            "{id}"
        );
        let s = secret().unwrap_or_default();
        assert!(s.starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&s[6..]).map(|k| k.len()).ok(), Some(24));
        assert_ne!(secret().ok(), secret().ok());
    }
}
