//! Redis as production runs it, started by the tests on 127.0.0.1: TLS with certificates made
//! here by the `openssl` CLI, and a Sentinel set (a master, a replica, three sentinels).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::redis::RedisServer;
use super::{free_port, wait_until};

/// A private CA, a server certificate it signed (for 127.0.0.1 and localhost), a client
/// certificate it signed, and a second CA that signed nothing of these. Deleted on drop.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "webhook-service-certs-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cert dir: {e}"));
        let certs = Certs { dir };
        let server = "subjectAltName=IP:127.0.0.1,DNS:localhost";
        certs.self_signed("ca", "webhook-service-test-ca");
        certs.self_signed("other-ca", "some-other-ca");
        certs.signed("server", "ca", "localhost", server);
        certs.signed(
            "client",
            "ca",
            "webhook-service",
            "extendedKeyUsage=clientAuth",
        );
        // The same names, signed by the other CA: a certificate rotated to a CA we do not trust.
        certs.signed("rotated", "other-ca", "localhost", server);
        certs
    }

    /// `<name>.pem` (a certificate) or `<name>.key` in the directory.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// Runs `openssl` with `args` (split on spaces) in the directory.
    fn openssl(&self, args: &str) {
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `<name>.pem` and `<name>.key`: a P-256 CA certificate valid for two days.
    fn self_signed(&self, name: &str, cn: &str) {
        self.openssl(&format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout {name}.key -out {name}.pem -days 2 -subj /CN={cn}"
        ));
    }

    /// `<name>.pem` and `<name>.key`: a certificate `ca` signed, with one X.509 v3 extension.
    fn signed(&self, name: &str, ca: &str, cn: &str, extension: &str) {
        std::fs::write(
            self.dir.join(format!("{name}.ext")),
            format!("{extension}\n"),
        )
        .unwrap_or_else(|e| panic!("{name}.ext: {e}"));
        self.openssl(&format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout {name}.key -out {name}.csr -subj /CN={cn}"
        ));
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
             -out {name}.pem -days 2 -extfile {name}.ext"
        ));
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A redis-server with a plain port (for the test's own commands) and a TLS port.
pub struct TlsRedis {
    pub server: RedisServer,
    pub tls_port: u16,
}

impl TlsRedis {
    /// TLS with the server certificate of `certs`; `client_certs` makes it require a client
    /// certificate signed by the CA.
    pub fn start(certs: &Certs, client_certs: bool) -> TlsRedis {
        TlsRedis::start_on(certs, client_certs, "server", free_port())
    }

    /// The same on `tls_port`, showing the certificate `<server>.pem`.
    pub fn start_on(certs: &Certs, client_certs: bool, server: &str, tls_port: u16) -> TlsRedis {
        let args: Vec<String> = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &certs.path(&format!("{server}.pem")),
            "--tls-key-file",
            &certs.path(&format!("{server}.key")),
            "--tls-ca-cert-file",
            &certs.path("ca.pem"),
            "--tls-auth-clients",
            if client_certs { "yes" } else { "no" },
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        TlsRedis {
            server: RedisServer::start_with(&args),
            tls_port,
        }
    }

    /// `rediss://127.0.0.1:<tls port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}

/// The master name the sentinels watch.
pub const MASTER: &str = "mymaster";

/// One master, one replica, three sentinels (quorum 2), with a 1 s down-after so failovers are
/// quick. Every process is killed on drop.
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
    dir: PathBuf,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(&[
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            master.port.to_string(),
        ]);
        let dir = std::env::temp_dir().join(format!("webhook-service-sentinels-{}", master.port));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("sentinel dir: {e}"));
        let sentinels = (0..3)
            .map(|i| start_sentinel(&dir, i, master.port))
            .collect();
        let set = SentinelSet {
            master,
            replica,
            sentinels,
            dir,
        };
        set.wait_until_ready();
        set
    }

    /// `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The master's port as the first sentinel that answers tells it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let client = ::redis::Client::open(s.url().as_str()).ok()?;
            let mut conn = client
                .get_connection_with_timeout(Duration::from_millis(500))
                .ok()?;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
            let addr: Option<(String, u16)> = ::redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER)
                .query(&mut conn)
                .ok()?;
            addr.map(|(_, port)| port)
        })
    }

    /// Every sentinel sees the replica and the two other sentinels (a failover needs both).
    fn wait_until_ready(&self) {
        wait_until(
            Duration::from_secs(30),
            "the sentinels to know each other",
            || {
                self.sentinels
                    .iter()
                    .all(|s| {
                        let mut conn = s.conn();
                        let info: Vec<(String, String)> = ::redis::cmd("SENTINEL")
                            .arg("MASTER")
                            .arg(MASTER)
                            .query(&mut conn)
                            .unwrap_or_default();
                        let field = |name: &str| {
                            info.iter()
                                .find(|(k, _)| k == name)
                                .and_then(|(_, v)| v.parse::<u32>().ok())
                        };
                        field("num-slaves") == Some(1) && field("num-other-sentinels") == Some(2)
                    })
                    .then_some(())
            },
        );
        wait_until(Duration::from_secs(30), "the replica to be in sync", || {
            let info: String = ::redis::cmd("INFO")
                .arg("replication")
                .query(&mut self.replica.conn())
                .ok()?;
            info.contains("master_link_status:up").then_some(())
        });
    }
}

fn start_sentinel(dir: &Path, i: usize, master_port: u16) -> RedisServer {
    let port = free_port();
    let config = dir.join(format!("sentinel-{i}.conf"));
    let text = format!(
        "sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER} 1000\n\
         sentinel failover-timeout {MASTER} 5000\n\
         sentinel parallel-syncs {MASTER} 1\n"
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    RedisServer::start_on(
        port,
        Some(config),
        &[
            "--dir".to_string(),
            dir.display().to_string(),
            "--sentinel".to_string(),
        ],
    )
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for s in &mut self.sentinels {
            s.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
