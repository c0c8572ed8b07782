//! Where Redis is and how to talk to it: `REDIS_URL` with the TLS and Sentinel settings, parsed
//! and checked once (at start-up, so a bad file or URL stops the service with the setting's name).
//!
//! - `redis://[user:password@]host:port[/db]`: one server; `rediss://` the same over TLS.
//! - `redis+sentinel://[user:password@]host1:26379,host2:26379/<master>[/db]`: the master of a
//!   Sentinel set, asked for again after each failover; `rediss+sentinel://` uses TLS to the
//!   sentinels and to the data nodes. The URL's credentials and db are the data nodes';
//!   sentinels that need their own take `REDIS_SENTINEL_USERNAME`/`REDIS_SENTINEL_PASSWORD`.
//!
//! TLS trusts Mozilla's roots (compiled in) unless `REDIS_TLS_CA_FILE` names a CA of its own;
//! `REDIS_TLS_CERT_FILE` and `REDIS_TLS_KEY_FILE` present a client certificate (mutual TLS).

use std::fmt;
use std::sync::Arc;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How Redis is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One server named by the URL.
    Standalone,
    /// The master of a set named to Sentinel.
    Sentinel,
}

impl Mode {
    /// The name shown in `/health` and `/metrics`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Sentinel => "sentinel",
        }
    }
}

/// Default port of a sentinel.
const SENTINEL_PORT: u16 = 26379;

/// The Redis settings other than the URL.
#[derive(Clone, Default)]
pub struct RedisOptions {
    /// `REDIS_TLS_CA_FILE`: PEM certificates trusted instead of the built-in roots.
    pub(crate) tls_ca_file: Option<String>,
    /// `REDIS_TLS_CERT_FILE`: PEM client certificate chain (mutual TLS).
    pub(crate) tls_cert_file: Option<String>,
    /// `REDIS_TLS_KEY_FILE`: PEM private key of that certificate.
    pub(crate) tls_key_file: Option<String>,
    /// `REDIS_TLS_UNSAFE_SKIP_VERIFY`: accept any server certificate (test setups only).
    pub(crate) tls_unsafe_skip_verify: bool,
    /// `REDIS_SENTINEL_USERNAME`.
    pub(crate) sentinel_username: Option<String>,
    /// `REDIS_SENTINEL_PASSWORD`.
    pub(crate) sentinel_password: Option<String>,
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_unsafe_skip_verify", &self.tls_unsafe_skip_verify)
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A Redis setting that cannot be used, with the variable to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    /// The variable at fault.
    pub(crate) variable: &'static str,
    /// What is wrong with it.
    pub(crate) rule: String,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.rule)
    }
}

impl std::error::Error for TargetError {}

fn fault(variable: &'static str, rule: impl Into<String>) -> TargetError {
    TargetError {
        variable,
        rule: rule.into(),
    }
}

/// TLS as configured: what to trust and what to present.
#[derive(Clone)]
struct Tls {
    certificates: TlsCertificates,
    insecure: bool,
}

/// The sentinels of a master.
#[derive(Clone)]
pub(crate) struct Sentinels {
    /// The master's name in Sentinel.
    pub(crate) master_name: String,
    /// Each sentinel's `host:port` and client.
    pub(crate) nodes: Vec<(String, redis::Client)>,
}

/// How to reach Redis: parsed settings, ready to make clients.
#[derive(Clone)]
pub struct Target {
    url_variable: &'static str,
    tls: Option<Tls>,
    /// Credentials and db of the data nodes.
    node_settings: RedisConnectionInfo,
    /// The one server (standalone).
    standalone: Option<(String, redis::Client)>,
    /// The sentinels (Sentinel mode).
    sentinels: Option<Sentinels>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("mode", &self.mode())
            .field("tls", &self.tls.is_some())
            .field("described", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `url` (read from `url_variable`) with `options`, reading the certificate files.
    pub fn parse(
        url: &str,
        url_variable: &'static str,
        options: &RedisOptions,
    ) -> Result<Target, TargetError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            fault(
                url_variable,
                "must be a redis://, rediss://, redis+sentinel:// or rediss+sentinel:// URL",
            )
        })?;
        let (sentinel, wants_tls) = match scheme {
            "redis" | "valkey" | "unix" | "redis+unix" | "valkey+unix" => (false, false),
            "rediss" | "valkeys" => (false, true),
            "redis+sentinel" => (true, false),
            "rediss+sentinel" => (true, true),
            other => {
                return Err(fault(
                    url_variable,
                    format!(
                        "the scheme {other:?} is not one of redis://, rediss://, redis+sentinel://, rediss+sentinel://"
                    ),
                ));
            }
        };
        let tls = tls_settings(wants_tls, url_variable, options)?;
        let mut target = Target {
            url_variable,
            tls,
            node_settings: RedisConnectionInfo::default(),
            standalone: None,
            sentinels: None,
        };
        if sentinel {
            target.parse_sentinels(rest, options)?;
        } else {
            let info = url
                .into_connection_info()
                .map_err(|e| fault(url_variable, format!("not a usable Redis URL: {e}")))?;
            let node = match info.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    format!("{host}:{port}")
                }
                ConnectionAddr::Unix(path) => path.display().to_string(),
                _ => url_variable.to_string(),
            };
            target.node_settings = info.redis_settings().clone();
            let client = target
                .client(info.addr().clone(), target.node_settings.clone())
                .map_err(|e| fault(url_variable, format!("cannot be used: {e}")))?;
            target.standalone = Some((node, client));
        }
        Ok(target)
    }

    /// `host1:26379,host2:26379/<master>[/db]` with optional `user:password@` in front.
    fn parse_sentinels(&mut self, rest: &str, options: &RedisOptions) -> Result<(), TargetError> {
        let variable = self.url_variable;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let master_name = segments
            .next()
            .ok_or_else(|| fault(variable, "a Sentinel URL ends with /<master name>"))?
            .to_string();
        let db = segments.next().unwrap_or("0");
        if segments.next().is_some() {
            return Err(fault(
                variable,
                "a Sentinel URL's path is /<master name> or /<master name>/<db>",
            ));
        }
        // The crate decodes the credentials and the db of a plain URL built from the same parts.
        let credentials = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let plain = format!("redis://{credentials}sentinel-node/{db}");
        self.node_settings = plain
            .as_str()
            .into_connection_info()
            .map_err(|e| fault(variable, format!("bad credentials or db: {e}")))?
            .redis_settings()
            .clone();
        let mut sentinel_settings = RedisConnectionInfo::default();
        if let Some(user) = &options.sentinel_username {
            sentinel_settings = sentinel_settings.set_username(user);
        }
        if let Some(password) = &options.sentinel_password {
            sentinel_settings = sentinel_settings.set_password(password);
        }
        let mut nodes = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (name, port) = split_host_port(host, SENTINEL_PORT)
                .ok_or_else(|| fault(variable, format!("{host:?} is not host[:port]")))?;
            let addr = self.addr(&name, port);
            let client = self
                .client(addr, sentinel_settings.clone())
                .map_err(|e| fault(variable, format!("sentinel {host}: {e}")))?;
            nodes.push((format!("{name}:{port}"), client));
        }
        if nodes.is_empty() {
            return Err(fault(
                variable,
                "a Sentinel URL names at least one sentinel",
            ));
        }
        self.sentinels = Some(Sentinels { master_name, nodes });
        Ok(())
    }

    /// Standalone or Sentinel.
    pub(crate) fn mode(&self) -> Mode {
        match self.sentinels {
            Some(_) => Mode::Sentinel,
            None => Mode::Standalone,
        }
    }

    /// Whether connections use TLS.
    pub(crate) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The variable the URL came from.
    pub(crate) fn url_variable(&self) -> &'static str {
        self.url_variable
    }

    /// The server (standalone), with its `host:port`.
    pub(crate) fn standalone(&self) -> Option<&(String, redis::Client)> {
        self.standalone.as_ref()
    }

    /// The sentinels (Sentinel mode).
    pub(crate) fn sentinels(&self) -> Option<&Sentinels> {
        self.sentinels.as_ref()
    }

    /// For logs: the server, or the master name and its sentinels (never credentials).
    pub(crate) fn describe(&self) -> String {
        match (&self.standalone, &self.sentinels) {
            (Some((node, _)), _) => node.clone(),
            (None, Some(s)) => {
                let names: Vec<&str> = s.nodes.iter().map(|(n, _)| n.as_str()).collect();
                format!("master {} via sentinels {}", s.master_name, names.join(","))
            }
            (None, None) => String::new(),
        }
    }

    /// A client of the data node at `host:port` (a master a sentinel named).
    pub(crate) fn node_client(&self, host: &str, port: u16) -> redis::RedisResult<redis::Client> {
        self.client(self.addr(host, port), self.node_settings.clone())
    }

    fn addr(&self, host: &str, port: u16) -> ConnectionAddr {
        match &self.tls {
            None => ConnectionAddr::Tcp(host.to_string(), port),
            Some(tls) => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: tls.insecure,
                tls_params: None,
            },
        }
    }

    fn client(
        &self,
        addr: ConnectionAddr,
        settings: RedisConnectionInfo,
    ) -> redis::RedisResult<redis::Client> {
        let addr = match (addr, &self.tls) {
            // `#insecure` in a URL, or the setting: either way nothing is verified.
            (
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure,
                    tls_params,
                },
                Some(tls),
            ) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: insecure || tls.insecure,
                tls_params,
            },
            (addr, _) => addr,
        };
        let info = addr.into_connection_info()?.set_redis_settings(settings);
        match &self.tls {
            Some(tls) => redis::Client::build_with_tls(info, tls.certificates.clone()),
            None => redis::Client::open(info),
        }
    }
}

/// Reads the TLS files; refuses TLS settings without a TLS URL.
fn tls_settings(
    wants_tls: bool,
    url_variable: &'static str,
    options: &RedisOptions,
) -> Result<Option<Tls>, TargetError> {
    let named = [
        ("REDIS_TLS_CA_FILE", options.tls_ca_file.is_some()),
        ("REDIS_TLS_CERT_FILE", options.tls_cert_file.is_some()),
        ("REDIS_TLS_KEY_FILE", options.tls_key_file.is_some()),
        (
            "REDIS_TLS_UNSAFE_SKIP_VERIFY",
            options.tls_unsafe_skip_verify,
        ),
    ];
    if !wants_tls {
        return match named.iter().find(|(_, set)| *set) {
            Some((variable, _)) => Err(fault(
                variable,
                format!("is set, but {url_variable} is not a rediss:// or rediss+sentinel:// URL"),
            )),
            None => Ok(None),
        };
    }
    let root_cert = match &options.tls_ca_file {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    let client_tls = match (&options.tls_cert_file, &options.tls_key_file) {
        (Some(cert), Some(key)) => Some(read_client_identity(cert, key)?),
        (Some(_), None) => {
            return Err(fault(
                "REDIS_TLS_KEY_FILE",
                "must be set with REDIS_TLS_CERT_FILE (the client certificate's private key)",
            ));
        }
        (None, Some(_)) => {
            return Err(fault(
                "REDIS_TLS_CERT_FILE",
                "must be set with REDIS_TLS_KEY_FILE (the client certificate)",
            ));
        }
        (None, None) => None,
    };
    Ok(Some(Tls {
        certificates: TlsCertificates {
            client_tls,
            root_cert,
        },
        insecure: options.tls_unsafe_skip_verify,
    }))
}

fn read(path: &str, variable: &'static str) -> Result<Vec<u8>, TargetError> {
    std::fs::read(path).map_err(|e| fault(variable, format!("cannot read {path}: {e}")))
}

/// `REDIS_TLS_CA_FILE`: one or more PEM certificates, each usable as a trust anchor.
fn read_ca(path: &str) -> Result<Vec<u8>, TargetError> {
    const VARIABLE: &str = "REDIS_TLS_CA_FILE";
    let pem = read(path, VARIABLE)?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| fault(VARIABLE, format!("{path} is not PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(fault(VARIABLE, format!("{path} holds no PEM CERTIFICATE")));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|e| {
            fault(
                VARIABLE,
                format!("{path}: a certificate cannot be a CA: {e}"),
            )
        })?;
    }
    Ok(pem)
}

/// `REDIS_TLS_CERT_FILE` and `REDIS_TLS_KEY_FILE`: a certificate chain and its private key,
/// checked to belong together (rustls refuses a mismatched pair only once connected).
fn read_client_identity(
    cert_path: &str,
    key_path: &str,
) -> Result<redis::ClientTlsConfig, TargetError> {
    let cert_pem = read(cert_path, "REDIS_TLS_CERT_FILE")?;
    let key_pem = read(key_path, "REDIS_TLS_KEY_FILE")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            fault(
                "REDIS_TLS_CERT_FILE",
                format!("{cert_path} is not PEM: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err(fault(
            "REDIS_TLS_CERT_FILE",
            format!("{cert_path} holds no PEM CERTIFICATE"),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        fault(
            "REDIS_TLS_KEY_FILE",
            format!("{key_path} holds no PEM private key: {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let checked = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_client_auth_cert(chain, key)
        });
    match checked {
        Ok(Ok(_)) => Ok(redis::ClientTlsConfig {
            client_cert: cert_pem,
            client_key: key_pem,
        }),
        Ok(Err(rustls::Error::InconsistentKeys(_))) => Err(fault(
            "REDIS_TLS_KEY_FILE",
            format!("{key_path} is not the private key of the certificate in {cert_path}"),
        )),
        Ok(Err(e)) | Err(e) => Err(fault(
            "REDIS_TLS_CERT_FILE",
            format!("{cert_path} with the key {key_path} cannot be used: {e}"),
        )),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_string(), port.parse().ok()?))
        }
        None if !text.is_empty() => Some((text.to_string(), default_port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, options: &RedisOptions) -> Result<Target, TargetError> {
        Target::parse(url, "REDIS_URL", options)
    }

    #[test]
    fn standalone_urls_with_and_without_tls() {
        let plain = parse("redis://u:p%40ss@h:7000/2", &RedisOptions::default());
        let plain = plain.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((plain.mode(), plain.tls()), (Mode::Standalone, false));
        assert_eq!(plain.describe(), "h:7000");
        assert_eq!(plain.node_settings.password(), Some("p@ss"));
        let tls = parse("rediss://h:7000", &RedisOptions::default());
        assert!(tls.is_ok_and(|t| t.tls()), "rediss:// is accepted");
    }

    #[test]
    fn sentinel_urls_name_master_sentinels_credentials_and_db() {
        let target = parse(
            "redis+sentinel://app:s%2Fcret@s1:26380,s2,[::1]:26381/mymaster/3",
            &RedisOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target.mode(), Mode::Sentinel);
        assert_eq!(
            target.describe(),
            "master mymaster via sentinels s1:26380,s2:26379,::1:26381"
        );
        assert_eq!(target.node_settings.username(), Some("app"));
        assert_eq!(target.node_settings.password(), Some("s/cret"));
        assert_eq!(target.node_settings.db(), 3);
        for bad in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel:///mymaster",
            "redis+sentinel://s1:x/mymaster",
            "redis+sentinel://s1/m/0/extra",
        ] {
            let e = parse(bad, &RedisOptions::default()).err();
            assert_eq!(e.map(|e| e.variable), Some("REDIS_URL"), "{bad}");
        }
    }

    #[test]
    fn tls_settings_name_the_variable_at_fault() {
        let ca_without_tls = RedisOptions {
            tls_ca_file: Some("/nonexistent".into()),
            ..RedisOptions::default()
        };
        let e = parse("redis://h", &ca_without_tls).err();
        assert_eq!(e.map(|e| e.variable), Some("REDIS_TLS_CA_FILE"));
        let e = parse("rediss://h", &ca_without_tls).err();
        assert!(
            e.as_ref().is_some_and(
                |e| e.variable == "REDIS_TLS_CA_FILE" && e.rule.contains("/nonexistent")
            ),
            "{e:?}"
        );
        let cert_without_key = RedisOptions {
            tls_cert_file: Some("/nonexistent".into()),
            ..RedisOptions::default()
        };
        let e = parse("rediss://h", &cert_without_key).err();
        assert_eq!(e.map(|e| e.variable), Some("REDIS_TLS_KEY_FILE"));
        let not_pem = std::env::temp_dir().join(format!("not-pem-{}", std::process::id()));
        let _ = std::fs::write(&not_pem, "hello");
        let bad_ca = RedisOptions {
            tls_ca_file: Some(not_pem.display().to_string()),
            ..RedisOptions::default()
        };
        let e = parse("rediss://h", &bad_ca).err();
        let _ = std::fs::remove_file(&not_pem);
        assert!(
            e.as_ref().is_some_and(
                |e| e.variable == "REDIS_TLS_CA_FILE" && e.rule.contains("CERTIFICATE")
            ),
            "{e:?}"
        );
    }

    #[test]
    fn other_schemes_are_refused_with_the_accepted_ones_listed() {
        let e = parse("http://h", &RedisOptions::default()).err();
        assert!(
            e.as_ref().is_some_and(|e| e.rule.contains("rediss://")),
            "{e:?}"
        );
    }
}
