//! The open files the service may have: the process's soft limit, and what the service needs
//! besides connections. The delivery client's idle connections and the API's connection limit
//! are both sized from it.

/// Open files the service needs besides API connections and delivery connections: Redis
/// connections, DNS lookups, the log, and some room.
pub(crate) const OTHER_FILES: usize = 96;
/// Most idle delivery connections kept, all origins together.
pub(crate) const MAX_IDLE_CONNECTIONS: usize = 4096;

/// The process's soft limit on open files, or `None` if unlimited or unknown.
pub(crate) fn open_file_limit() -> Option<u64> {
    soft_open_file_limit(&std::fs::read_to_string("/proc/self/limits").unwrap_or_default())
}

/// The soft limit on open files in the text of `/proc/self/limits`; `None` if unlimited or not
/// found.
pub(crate) fn soft_open_file_limit(limits: &str) -> Option<u64> {
    // "Max open files            1024                 524288               files"
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            300                  524288               files     \n";
        assert_eq!(soft_open_file_limit(limits), Some(300));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(soft_open_file_limit(unlimited), None);
        assert_eq!(soft_open_file_limit(""), None);
    }
}
