//! The porthole test bed's node agent. The test cluster is a real
//! kube-apiserver and kube-controller-manager with no kubelet, scheduler or
//! kube-proxy; this agent plays all three for one Node:
//!
//! * [`node`]: registers the Node and keeps its Ready heartbeat;
//! * [`scheduler`]: binds unscheduled pods to it;
//! * [`kubelet`]: runs the node's pods as podman containers (sandbox, volumes,
//!   env, probes, restarts, status, graceful deletion);
//! * [`service_proxy`]: serves ClusterIPs and NodePorts from the host.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod bridge;
pub mod cache;
pub mod config;
pub mod downward;
pub mod env;
pub mod expansion;
pub mod image;
pub mod kubelet;
pub mod loopback;
pub mod node;
pub mod podman;
pub mod probes;
pub mod quantity;
pub mod scheduler;
pub mod service_env;
pub mod service_proxy;
pub mod status;
pub mod termination;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Args;

/// How long shutdown waits for tasks to let go.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the agent until SIGINT/SIGTERM or until one of its parts fails.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // kube's TLS uses ring; probes' reqwest needs a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client(&args).await?;
    for dir in [&args.state_dir, &args.log_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let podman = podman::Podman::new(&args.podman);
    let runtime_version = podman.version().await.context("podman is required")?;
    let server_version = client
        .apiserver_version()
        .await
        .context("reaching the API server")?
        .git_version;
    loopback::add(args.node_ip, false)
        .await
        .context("adding the node IP to lo")?;
    let identity = node::NodeIdentity::from_host(
        &args.node_name,
        args.node_ip,
        &server_version,
        &runtime_version,
    );
    let node_labels = identity.labels();

    let cancel = CancellationToken::new();
    let mut tasks: JoinSet<&'static str> = JoinSet::new();
    {
        let (client, cancel) = (client.clone(), cancel.clone());
        tasks.spawn(async move {
            if let Err(err) = node::run(client, identity, args.heartbeat, cancel).await {
                tracing::error!(error = %err, "cannot register the node");
            }
            "node"
        });
    }
    let (cache, reflectors) = cache::Cache::new(&client);
    for reflector in reflectors {
        let cancel = cancel.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = reflector => {}
            }
            "reflector"
        });
    }
    cache.wait_until_ready().await.context(
        "waiting for the initial lists of Secrets, ConfigMaps, Services and EndpointSlices",
    )?;
    tracing::info!("caches synced");

    let exits = podman::ExitWatch::default();
    tasks.spawn({
        let (exits, podman, cancel) = (exits.clone(), podman.clone(), cancel.clone());
        async move {
            exits.run(podman, cancel).await;
            "exit watch"
        }
    });
    tasks.spawn({
        let proxy = service_proxy::ServiceProxy::new(
            cache.services.clone(),
            cache.endpoint_slices.clone(),
            args.node_ip,
        );
        let (changed, cancel) = (cache.services_changed.clone(), cancel.clone());
        async move {
            proxy.run(changed, cancel).await;
            "service proxy"
        }
    });
    tasks.spawn({
        let (client, name, cancel) = (client.clone(), args.node_name.clone(), cancel.clone());
        async move {
            scheduler::run(client, name, node_labels, cancel).await;
            "scheduler"
        }
    });
    let ctx = Arc::new(kubelet::NodeContext {
        client: client.clone(),
        prober: probes::Prober::new(podman.clone()).context("building the probe HTTP client")?,
        sandbox_root: kubelet::SandboxRoot::prepare(&args.state_dir)
            .context("preparing the sandbox root")?,
        tokens: volumes::token::TokenManager::new(client.clone()),
        podman,
        cache,
        exits,
        node_name: args.node_name.clone(),
        node_ip: args.node_ip,
        state_dir: args.state_dir.clone(),
        log_dir: args.log_dir.clone(),
        initial_backoff: args.initial_backoff,
        max_backoff: args.max_backoff,
        shutdown: cancel.clone(),
        fake_containers: args
            .fake_containers
            .then(|| Arc::new(kubelet::fake::FakeContainers::default())),
    });
    if args.fake_containers {
        tracing::warn!(
            network = %format!("{}/{}", kubelet::fake::FAKE_POD_NETWORK.0, kubelet::fake::FAKE_POD_NETWORK.1),
            "fake containers: porthole proxy pods are reported running without running anything \
             (for the control-plane benchmark only)"
        );
    }
    tasks.spawn({
        let ctx = ctx.clone();
        async move {
            kubelet::run(ctx).await;
            "kubelet"
        }
    });

    tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("shutting down");
        }
        Some(ended) = tasks.join_next() => {
            tracing::error!(task = ?ended, "a part of the agent ended unexpectedly; shutting down");
        }
    }
    cancel.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!("some tasks did not stop in time");
    }
    if args.remove_containers_on_exit {
        kubelet::remove_all_containers(&ctx).await;
    }
    Ok(())
}

async fn client(args: &Args) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
