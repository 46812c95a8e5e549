//! What every reconcile shares: the client, the settings, the Event recorder
//! and the metrics.

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::config::Config;
use crate::telemetry::Metrics;

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Metrics,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: crate::reconcile::MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
        }
    }
}
