//! What every reconcile shares: the client, the settings, the Event recorder
//! and the metrics.

use std::sync::Mutex;

use futures::channel::mpsc::UnboundedReceiver;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use porthole_api::v1alpha1::ConsoleSession;

use crate::cleaned::CleanedUp;
use crate::config::Config;
use crate::telemetry::Metrics;
use crate::viewers;

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Plain HTTP to the proxy pods (viewer reports).
    pub http: reqwest::Client,
    pub viewer_watches: viewers::Watches,
    /// Finished sessions whose children are already deleted.
    pub cleaned_up: CleanedUp,
    /// Sessions the viewer watches send back; the controller takes it once.
    pub viewer_triggers: Mutex<Option<UnboundedReceiver<ObjectRef<ConsoleSession>>>>,
}

/// An HTTP client for the proxy pods' plain-HTTP viewer reports. The image
/// has no system CA store, so reqwest gets an empty rustls configuration: it
/// is never used for TLS.
fn plain_http_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(false)
        .build()
        .expect("a client without TLS roots or proxy settings always builds")
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: crate::reconcile::MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let http = plain_http_client();
        let (viewer_watches, triggers) = viewers::Watches::new(http.clone());
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            http,
            viewer_watches,
            cleaned_up: CleanedUp::default(),
            viewer_triggers: Mutex::new(Some(triggers)),
        }
    }
}
