//! Opening a connection: with a heartbeat, so a silent broker is noticed, and a timeout, since
//! the AMQP handshake has none of its own.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// The AMQP URL when `JOB_MANAGER_AMQP_URL` is not set.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The heartbeat asked for when the URL names none: a stalled connection is noticed within
/// about 30 s instead of the broker's default of two minutes.
pub const DEFAULT_HEARTBEAT_S: u16 = 15;
/// How long opening a connection may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// `JOB_MANAGER_AMQP_URL`, or [`DEFAULT_AMQP_URL`].
pub fn amqp_url_from_env() -> String {
    std::env::var("JOB_MANAGER_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// Opens a connection to `url`, named `name` in the broker's management UI; asks for a
/// heartbeat unless the URL names one, and gives up after [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let url = with_heartbeat(url);
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&url, properties)).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer from the broker within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
        )
        .into()),
    }
}

/// `url` with a `heartbeat` query parameter, unless it has one.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={DEFAULT_HEARTBEAT_S}")
}

#[cfg(test)]
mod tests {
    use super::with_heartbeat;

    #[test]
    fn a_heartbeat_is_asked_for_unless_the_url_names_one() {
        assert_eq!(
            with_heartbeat("amqp://h:5672/%2f"),
            "amqp://h:5672/%2f?heartbeat=15"
        );
        assert_eq!(
            with_heartbeat("amqp://h/v?frame_max=8192"),
            "amqp://h/v?frame_max=8192&heartbeat=15"
        );
        assert_eq!(
            with_heartbeat("amqp://h/v?heartbeat=5"),
            "amqp://h/v?heartbeat=5"
        );
    }
}
