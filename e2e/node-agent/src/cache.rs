//! Cluster objects the agent reads all the time, kept by reflectors: Secrets
//! and ConfigMaps (env and volumes), Services and EndpointSlices (service
//! environment variables and the proxy).
use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::runtime::{WatchStreamExt, reflector as reflect};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::env::ObjectLookup;

/// Read-only views of the cluster, plus change signals.
#[derive(Clone)]
pub struct Cache {
    pub secrets: Store<Secret>,
    pub config_maps: Store<ConfigMap>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    /// Fires on any Secret or ConfigMap change.
    pub objects_changed: watch::Receiver<()>,
    /// Fires on any Service or EndpointSlice change.
    pub services_changed: watch::Receiver<()>,
}

/// The reflector loops that keep a [`Cache`] current; run them until shutdown.
pub type Reflectors = Vec<futures::future::BoxFuture<'static, ()>>;

impl Cache {
    pub fn new(client: &Client) -> (Self, Reflectors) {
        let (objects_tx, objects_changed) = watch::channel(());
        let (services_tx, services_changed) = watch::channel(());
        let mut loops: Reflectors = Vec::new();
        let secrets = reflect_all(client, objects_tx.clone(), &mut loops);
        let config_maps = reflect_all(client, objects_tx, &mut loops);
        let services = reflect_all(client, services_tx.clone(), &mut loops);
        let endpoint_slices = reflect_all(client, services_tx, &mut loops);
        let cache = Self {
            secrets,
            config_maps,
            services,
            endpoint_slices,
            objects_changed,
            services_changed,
        };
        (cache, loops)
    }

    /// Waits until every store holds a complete initial list.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.secrets.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await
    }
}

impl ObjectLookup for Cache {
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps
            .get(&ObjectRef::new(name).within(namespace))
    }
}

fn reflect_all<K>(client: &Client, changed: watch::Sender<()>, loops: &mut Reflectors) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let events = reflect(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    loops.push(Box::pin(signal_changes(events, changed)));
    reader
}

async fn signal_changes<K: Resource<DynamicType = ()>>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    changed: watch::Sender<()>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => changed.send_replace(()),
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(err) => {
                tracing::warn!(error = %err, kind = %K::kind(&Default::default()), "watch failed; retrying")
            }
        }
    }
}
