//! `rediss://`: a redis-server with a TLS port and certificates made by the test.

use std::time::Duration;

use crate::support::receiver::Receiver;
use crate::support::redis::add_event;
use crate::support::service::Service;
use crate::support::topology::{Certs, TlsRedis};
use crate::support::wait_until;
use crate::{register, webhook};

use super::{LONG, job, jobs_received, missing, start_and_expect_exit};

/// The ports (server side) of the connections `tls` has from clients other than the one asking.
fn client_ports(tls: &TlsRedis) -> Vec<u16> {
    let list: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut tls.server.conn())
        .unwrap_or_default();
    list.lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .filter_map(|line| {
            let laddr = line.split(' ').find_map(|f| f.strip_prefix("laddr="))?;
            laddr.rsplit(':').next()?.parse().ok()
        })
        .collect()
}

/// Publishes `n` pub/sub events and adds `n` stream entries (through the plain port), and
/// waits until `receiver` has every one.
fn events_arrive(tls: &TlsRedis, receiver: &Receiver, prefix: &str, n: usize) {
    let mut conn = tls.server.conn();
    for i in 0..n {
        tls.server
            .publish("complete_job", &job(&format!("{prefix}-p"), i));
        if let Err(e) = add_event(&mut conn, "complete_job", &job(&format!("{prefix}-s"), i)) {
            panic!("XADD: {e}");
        }
    }
    wait_until(LONG, "every event over TLS", || {
        let (seen, _) = jobs_received(receiver);
        let lost = missing(&seen, &format!("{prefix}-p"), n).len()
            + missing(&seen, &format!("{prefix}-s"), n).len();
        (lost == 0).then_some(())
    });
}

#[test]
fn events_flow_over_rediss_with_a_private_ca() {
    let certs = Certs::generate();
    let tls = TlsRedis::start(&certs, false);
    let ca = certs.path("ca.pem");
    let service = Service::start(
        &tls.server,
        &[
            ("REDIS_URL", &tls.url()),
            ("REDIS_TLS_CA_FILE", &ca),
            ("WEBHOOK_EVENT_STREAM", "events"),
        ],
    );
    let health = service.health();
    assert_eq!(health["redis"]["tls"], true, "{health}");
    assert_eq!(health["redis"]["mode"], "standalone");
    assert_eq!(
        health["redis"]["node"],
        format!("127.0.0.1:{}", tls.tls_port)
    );
    let receiver = Receiver::ok();
    register(
        &tls.server,
        &service,
        "wh_1_tls",
        webhook(&receiver.url("/tls"), &["complete_job"]),
    );
    events_arrive(&tls, &receiver, "tls", 20);
    // Every connection the service holds came in on the TLS port.
    let ports = client_ports(&tls);
    assert!(!ports.is_empty());
    assert!(
        ports.iter().all(|p| *p == tls.tls_port),
        "connections on ports {ports:?}, TLS port {}",
        tls.tls_port
    );
    let metrics = crate::call(&service, "GET", "/metrics", None, &[]).text;
    assert!(
        metrics.contains(&format!(
            "webhook_redis_info{{mode=\"standalone\",node=\"127.0.0.1:{}\",tls=\"true\"}} 1",
            tls.tls_port
        )),
        "{metrics}"
    );
}

#[test]
fn an_untrusted_server_certificate_stops_start_up_naming_the_setting() {
    let certs = Certs::generate();
    let tls = TlsRedis::start(&certs, false);
    let url = tls.url();
    let other_ca = certs.path("other-ca.pem");
    for env in [
        // A CA file that did not sign the server's certificate.
        vec![
            ("REDIS_URL", url.as_str()),
            ("REDIS_TLS_CA_FILE", &other_ca),
        ],
        // No CA file: Mozilla's roots, which did not sign it either.
        vec![("REDIS_URL", url.as_str())],
    ] {
        let (code, stderr) = start_and_expect_exit(&env);
        assert!(
            code.is_some_and(|c| c != 0),
            "exit {code:?} with {env:?}: {stderr}"
        );
        assert!(
            stderr.contains("REDIS_TLS_CA_FILE") && stderr.contains("not trusted"),
            "{stderr}"
        );
    }
    // A client key that is not the certificate's: refused before any connection.
    let (code, stderr) = start_and_expect_exit(&[
        ("REDIS_URL", &url),
        ("REDIS_TLS_CA_FILE", &certs.path("ca.pem")),
        ("REDIS_TLS_CERT_FILE", &certs.path("client.pem")),
        ("REDIS_TLS_KEY_FILE", &certs.path("server.key")),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("REDIS_TLS_KEY_FILE"), "{stderr}");
    // The unsafe setting connects to the same server, and says how unsafe it is.
    let service = Service::start(
        &tls.server,
        &[
            ("REDIS_URL", &url),
            ("REDIS_TLS_UNSAFE_SKIP_VERIFY", "true"),
        ],
    );
    assert_eq!(service.health()["redis"]["tls"], true);
    assert!(service.log_text().contains("NOT checked"));
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let certs = Certs::generate();
    let tls = TlsRedis::start(&certs, true);
    let url = tls.url();
    let ca = certs.path("ca.pem");
    // Without a client certificate the server ends the handshake.
    let (code, stderr) = start_and_expect_exit(&[("REDIS_URL", &url), ("REDIS_TLS_CA_FILE", &ca)]);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("REDIS_TLS_CERT_FILE"), "{stderr}");
    let service = Service::start(
        &tls.server,
        &[
            ("REDIS_URL", &url),
            ("REDIS_TLS_CA_FILE", &ca),
            ("REDIS_TLS_CERT_FILE", &certs.path("client.pem")),
            ("REDIS_TLS_KEY_FILE", &certs.path("client.key")),
            ("WEBHOOK_EVENT_STREAM", "events"),
        ],
    );
    let receiver = Receiver::ok();
    register(
        &tls.server,
        &service,
        "wh_1_mtls",
        webhook(&receiver.url("/mtls"), &["complete_job"]),
    );
    events_arrive(&tls, &receiver, "mtls", 10);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(jobs_received(&receiver).1, 0, "no event twice");
}

/// Once running, a server certificate that stops being trusted (rotated to another CA) is an
/// outage like any other: `/health` degraded and reconnects with backoff, back to normal once
/// Redis shows a trusted certificate again.
#[test]
fn a_certificate_rotated_to_an_untrusted_ca_while_running_degrades_health_until_fixed() {
    let certs = Certs::generate();
    let tls_port = crate::support::free_port();
    let tls = TlsRedis::start_on(&certs, false, "server", tls_port);
    let url = tls.url();
    let ca = certs.path("ca.pem");
    let service = Service::start(
        &tls.server,
        &[
            ("REDIS_URL", &url),
            ("REDIS_TLS_CA_FILE", &ca),
            ("WEBHOOK_EVENT_STREAM", "events"),
        ],
    );
    drop(tls);
    let rotated = TlsRedis::start_on(&certs, false, "rotated", tls_port);
    wait_until(LONG, "/health to report degraded", || {
        let health = service.try_health()?;
        (health["status"] == "degraded" && health["redis"]["connected"] == false).then_some(())
    });
    wait_until(LONG, "the refused certificate in the log", || {
        service.log_text().contains("UnknownIssuer").then_some(())
    });
    drop(rotated);
    let fixed = TlsRedis::start_on(&certs, false, "server", tls_port);
    wait_until(LONG, "/health to recover", || {
        (service.try_health()?["status"] == "ok").then_some(())
    });
    let receiver = Receiver::ok();
    register(
        &fixed.server,
        &service,
        "wh_1_rotated",
        webhook(&receiver.url("/rotated"), &["complete_job"]),
    );
    events_arrive(&fixed, &receiver, "fixed", 5);
}
