//! Bearer-token authentication (`WEBHOOK_API_TOKEN`), compared in constant time.

/// Whether `authorization` (the header's value) carries `token`.
pub(crate) fn authorized(token: &str, authorization: Option<&str>) -> bool {
    let Some(given) = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    }) else {
        return false;
    };
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let t = "0123456789abcdef";
        assert!(authorized(t, Some("Bearer 0123456789abcdef")));
        assert!(authorized(t, Some("bearer  0123456789abcdef ")));
        assert!(!authorized(t, Some("Bearer 0123456789abcdeF")));
        assert!(!authorized(t, Some("Basic 0123456789abcdef")));
        assert!(!authorized(t, Some("Bearer")));
        assert!(!authorized(t, None));
    }
}
