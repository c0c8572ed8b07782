//! The `webhook-service` binary: configuration, logging, then [`webhook_service::app::run`].

use std::process::ExitCode;

use webhook_service::{app, config::Config, logging};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("webhook-service: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(&config.log_filter, config.log_json) {
        eprintln!("webhook-service: cannot start logging: {e}");
        return ExitCode::from(2);
    }
    match app::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("webhook-service: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            log::error!("{message}");
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
