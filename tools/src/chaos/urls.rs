//! Pointing a replica's URLs at its proxies.

use std::net::SocketAddr;

use super::proxy::Proxy;

/// The proxies a replica's connections pass through.
pub struct Proxies {
    pub rabbitmq: Proxy,
    pub mongodb: Proxy,
}

/// Proxies in front of RabbitMQ and MongoDB for one replica; the URLs it is to use through
/// them, and the proxies.
pub async fn proxied(
    amqp_url: &str,
    mongodb_uri: &str,
    heartbeat_s: u64,
) -> anyhow::Result<(String, String, Proxies)> {
    let (url, rabbitmq) = proxy_for(amqp_url, 5672).await?;
    let (uri, mongodb) = proxy_for(mongodb_uri, 27017).await?;
    // A stall must outlast the heartbeat timeout (twice the interval) to test it.
    let amqp_url = with_query(&url, "heartbeat", &heartbeat_s.to_string());
    // Without it the driver also opens connections to the address the server reports for
    // itself, around the proxy.
    let mongodb_uri = with_query(&with_path(&uri), "directConnection", "true");
    Ok((amqp_url, mongodb_uri, Proxies { rabbitmq, mongodb }))
}

/// Adds `key=value` to the query of `url`.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

/// `url` with a `/` after its authority, so a query can follow (MongoDB URIs need it).
fn with_path(url: &str) -> String {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    if authority.contains('/') {
        url.to_owned()
    } else {
        match url.split_once('?') {
            Some((base, query)) => format!("{base}/?{query}"),
            None => format!("{url}/"),
        }
    }
}

/// Starts a proxy in front of the server `url` names; returns the URL through it, and the proxy.
async fn proxy_for(url: &str, default_port: u16) -> anyhow::Result<(String, Proxy)> {
    // The proxy's port is known only once it listens, and it needs the upstream address first.
    let (_, upstream) = redirect(url, default_port, 0).await?;
    let proxy = Proxy::start(upstream).await?;
    let (through, _) = redirect(url, default_port, proxy.port()).await?;
    Ok((through, proxy))
}

/// Rewrites the single `host:port` of a `scheme://[user@]host[:port][/…]` URL to
/// `127.0.0.1:port`; returns the new URL and the address it pointed at.
async fn redirect(url: &str, default_port: u16, port: u16) -> anyhow::Result<(String, SocketAddr)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("'{url}' has no scheme"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    if host.contains(',') {
        anyhow::bail!("a proxied URL must name one host, not '{host}'");
    }
    let target = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    let upstream = tokio::net::lookup_host(&target)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("'{target}' does not resolve"))?;
    Ok((format!("{scheme}://{user}127.0.0.1:{port}{tail}"), upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_path_gives_a_mongodb_uri_its_slash() {
        assert_eq!(with_path("mongodb://h:1"), "mongodb://h:1/");
        assert_eq!(with_path("mongodb://h:1?a=b"), "mongodb://h:1/?a=b");
        assert_eq!(with_path("mongodb://h:1/db?a=b"), "mongodb://h:1/db?a=b");
    }

    #[test]
    fn with_query_adds_a_parameter_to_either_kind_of_url() {
        assert_eq!(
            with_query("amqp://h:1/%2f", "heartbeat", "5"),
            "amqp://h:1/%2f?heartbeat=5"
        );
        assert_eq!(
            with_query("amqp://h:1/?a=b", "heartbeat", "5"),
            "amqp://h:1/?a=b&heartbeat=5"
        );
    }

    #[tokio::test]
    async fn redirect_points_a_url_at_the_proxy() {
        let (url, upstream) = redirect("amqp://guest:guest@127.0.0.1:5672/%2f", 5672, 4000)
            .await
            .expect("redirect");
        assert_eq!(url, "amqp://guest:guest@127.0.0.1:4000/%2f");
        assert_eq!(upstream, "127.0.0.1:5672".parse().expect("addr"));
        let (url, upstream) = redirect("mongodb://127.0.0.1?appName=x", 27017, 4001)
            .await
            .expect("redirect");
        assert_eq!(url, "mongodb://127.0.0.1:4001?appName=x");
        assert_eq!(upstream.port(), 27017);
        assert!(redirect("mongodb://a:1,b:2", 27017, 1).await.is_err());
    }
}
