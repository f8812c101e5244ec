//! Logging with `tracing`; the level comes from `RUST_LOG`. Built with the `otel` feature and
//! given an OTLP endpoint, the spans are also exported over OTLP/HTTP.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Keeps the exporter alive; call [`Telemetry::shutdown`] before exit to flush spans.
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops span export (a no-op without it).
    pub async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            // The exporter's HTTP client blocks; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. A second call (as in tests) is a no-op.
pub fn init(format: LogFormat) -> Telemetry {
    init_with(format, None)
}

/// Like [`init`], at `default` (an `EnvFilter` directive) when `RUST_LOG` is not set: the tools
/// run replicas in process and keep their lines to warnings unless asked.
pub fn init_at(format: LogFormat, default: &str) -> Telemetry {
    init_filtered(format, None, default)
}

/// Like [`init`], exporting spans to `otlp_endpoint` (e.g. `http://127.0.0.1:4318/v1/traces`)
/// when the crate is built with the `otel` feature.
pub fn init_with(format: LogFormat, otlp_endpoint: Option<&str>) -> Telemetry {
    init_filtered(format, otlp_endpoint, "info,lapin=warn,mongodb=warn")
}

fn init_filtered(format: LogFormat, otlp_endpoint: Option<&str>, default: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let fmt: BoxedLayer = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut layers: Vec<BoxedLayer> = vec![fmt];
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut telemetry = Telemetry::default();
    let mut note = None;
    if let Some(endpoint) = otlp_endpoint {
        #[cfg(feature = "otel")]
        match otel::layer(endpoint) {
            Ok((layer, provider)) => {
                layers.push(layer);
                telemetry.provider = Some(provider);
            }
            Err(error) => note = Some(format!("span export to {endpoint} is off: {error}")),
        }
        #[cfg(not(feature = "otel"))]
        {
            note = Some(format!(
                "span export to {endpoint} needs a build with `--features otel`; it is off"
            ));
        }
    }
    let _ = Registry::default().with(layers).with(filter).try_init();
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    telemetry
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer as _;

    use super::BoxedLayer;

    pub fn layer(endpoint: &str) -> Result<(BoxedLayer, SdkTracerProvider), String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("job-manager").build())
            .build();
        let tracer = provider.tracer("job-manager");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Ok((layer, provider))
    }
}
