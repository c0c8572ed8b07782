//! How an attempt ended, by class: what delivery decides on and monitoring counts. A leaf: pure,
//! it knows no other module.

/// How an attempt ended, by class (the `outcome` label of the metrics, too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OutcomeClass {
    /// 2xx.
    Success,
    /// 3xx: a failure, redirects are never followed.
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx (and anything outside 200-599).
    ServerError,
    /// No complete response within the time limit.
    Timeout,
    /// Connection refused, reset or closed, TLS failure.
    Connect,
    /// The host name did not resolve.
    Dns,
    /// The target address is not allowed (SSRF guard).
    SsrfBlocked,
}

impl OutcomeClass {
    /// Every class, in label order (the metrics list them so).
    pub(crate) const ALL: [OutcomeClass; 8] = [
        OutcomeClass::Success,
        OutcomeClass::Redirect,
        OutcomeClass::ClientError,
        OutcomeClass::ServerError,
        OutcomeClass::Timeout,
        OutcomeClass::Connect,
        OutcomeClass::Dns,
        OutcomeClass::SsrfBlocked,
    ];

    /// The class of an HTTP status.
    pub(crate) fn of_status(status: u16) -> OutcomeClass {
        match status {
            200..=299 => OutcomeClass::Success,
            300..=399 => OutcomeClass::Redirect,
            400..=499 => OutcomeClass::ClientError,
            _ => OutcomeClass::ServerError,
        }
    }

    /// The metric label: 2xx, 3xx, 4xx, 5xx, timeout, connect, dns, ssrf_blocked.
    pub(crate) fn label(self) -> &'static str {
        match self {
            OutcomeClass::Success => "2xx",
            OutcomeClass::Redirect => "3xx",
            OutcomeClass::ClientError => "4xx",
            OutcomeClass::ServerError => "5xx",
            OutcomeClass::Timeout => "timeout",
            OutcomeClass::Connect => "connect",
            OutcomeClass::Dns => "dns",
            OutcomeClass::SsrfBlocked => "ssrf_blocked",
        }
    }

    /// Whether this class says the endpoint is slow or unreachable (the adaptive concurrency
    /// limit shrinks on these).
    pub(crate) fn is_unreachable(self) -> bool {
        matches!(self, OutcomeClass::Timeout | OutcomeClass::Connect)
    }
}
