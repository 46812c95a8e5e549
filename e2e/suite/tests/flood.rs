//! Nobody who can reach a session's console port can end or block it: for
//! two minutes one client holds 200 connections on it, half idle after a
//! keep-alive request and half stuck in a half-sent request head, reopening
//! each as the proxy closes it. Throughout, the session stays Ready (the
//! kubelet's probes go to the proxy's internal port), and a viewer with the
//! right token gets the console within seconds, again and again.
//!
//! Nor can anyone stop the operator through its health and metrics port:
//! 1,000 half-open connections and 700 half-sent 16 KiB heads on it leave its
//! memory bounded, its `/healthz` answering, and sessions reconciled.
//!
//! The flood loads the machine, which would disturb timing-sensitive tests
//! running beside it, so this lives in the `disruptive` module: `make e2e`
//! runs those alone, after the rest.

mod disruptive {
    use std::time::Duration;

    use anyhow::{Context as _, Result, ensure};
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
    use porthole_e2e::HYPERVISOR_HOST;
    use porthole_e2e::cluster::faults::{operator_process, rss_kib};
    use porthole_e2e::cluster::{
        TestHypervisor, TestNamespace, child_name, children_api, client, kubectl, ready_status,
        record_figures,
    };
    use porthole_e2e::rfb::{self, ConsoleUrl};
    use porthole_e2e::vm::Vm;
    use serde_json::json;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use tokio::time::{Instant, timeout};
    use tokio_util::sync::CancellationToken;

    const VM_PORT: u16 = 5925;
    const HOLDERS: usize = 200;
    const FLOOD: Duration = Duration::from_secs(120);
    /// How long a right-token viewer may take to get the console.
    const VIEWER_WITHIN: Duration = Duration::from_secs(3);
    const WAIT: Duration = Duration::from_secs(120);

    /// One of the flood's connections, for as long as the flood lasts:
    /// connect, send a keep-alive request (or half a head), hold it until the
    /// proxy closes it, and again.
    async fn hold(addr: String, half_sent: bool, stop: CancellationToken) -> usize {
        let mut opened = 0;
        let head: &[u8] = if half_sent {
            b"GET / HTTP/1.1\r\nHost: flood\r\nX-Padding: "
        } else {
            b"GET / HTTP/1.1\r\nHost: flood\r\nConnection: keep-alive\r\n\r\n"
        };
        while !stop.is_cancelled() {
            let Ok(Ok(mut stream)) =
                timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await
            else {
                // Refused or queued: try again, as a flood would.
                tokio::task::yield_now().await;
                continue;
            };
            opened += 1;
            if stream.write_all(head).await.is_err() {
                continue;
            }
            // Read (and drop) whatever comes until the proxy closes.
            let mut sink = tokio::io::sink();
            tokio::select! {
                _ = tokio::io::copy(&mut stream, &mut sink) => {}
                () = stop.cancelled() => {}
            }
        }
        opened
    }

    /// Opens `count` connections to `addr` at once, each sending `head` (if
    /// any) and then nothing more; those the server neither accepts nor
    /// queues within a few seconds are left out.
    async fn held_open(addr: &str, count: usize, head: Option<&[u8]>) -> Vec<TcpStream> {
        let opening = (0..count).map(|_| async move {
            let mut stream = timeout(Duration::from_secs(3), TcpStream::connect(addr))
                .await
                .ok()?
                .ok()?;
            if let Some(head) = head {
                timeout(Duration::from_secs(3), stream.write_all(head))
                    .await
                    .ok()?
                    .ok()?;
            }
            Some(stream)
        });
        futures::future::join_all(opening)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    #[tokio::test]
    async fn a_flood_on_the_operators_health_port_leaves_it_reconciling_in_bounded_memory()
    -> Result<()> {
        let client = client().await?;
        let (ip, pid) = operator_process(&client).await?;
        let addr = format!("{ip}:8080");
        let before = rss_kib(pid)?;
        // A head of 16 KiB of header lines that never ends.
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: operator\r\n".to_vec();
        while big.len() < 16 * 1024 {
            big.extend_from_slice(
                b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let silent = held_open(&addr, 1000, None).await;
        let heavy = held_open(&addr, 700, Some(&big)).await;
        eprintln!(
            "holding {} silent and {} half-sent 16 KiB heads on the operator",
            silent.len(),
            heavy.len()
        );
        ensure!(
            silent.len() + heavy.len() >= 256,
            "the flood never filled the operator's connection slots"
        );

        // Meanwhile a session is reconciled to Ready.
        let ns = TestNamespace::create(&client, "opflood").await?;
        let hv = TestHypervisor::vnc("opflood").await?;
        let manifest = format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\n\
             metadata: {{name: meanwhile, namespace: {}}}\n\
             spec:\n  hypervisor: {}\n  vm: {{port: 5921}}\n",
            ns.name, hv.name
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        ready_status(&sessions, "meanwhile", WAIT)
            .await
            .context("a session applied during the flood")?;
        let after = rss_kib(pid)?;
        // Connections waiting in the kernel cost the operator nothing; those
        // it holds cost a bounded buffer each (256 at most). The old server
        // read every head whole into memory: 700 x 16 KiB and growing.
        let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
        ensure!(
            grown_mib <= 24.0,
            "the operator grew {grown_mib:.1} MiB under the flood ({before} -> {after} KiB)"
        );
        drop((silent, heavy));
        eprintln!("operator RSS {before} -> {after} KiB under the flood");
        record_figures(&json!({
            "test": "flood_on_the_operators_health_port",
            "fault": "1,000 half-open connections and 700 half-sent 16 KiB heads on the operator's /metrics port",
            "faults_injected": 1,
            "sessions_run": 1,
            "sessions_lost": 0,
            "orphans_left": 0,
            "outcome": format!("a session applied meanwhile became Ready; the operator's RSS grew {grown_mib:.1} MiB"),
        }))?;
        Ok(())
    }

    #[tokio::test]
    async fn a_flood_on_the_console_port_neither_ends_the_session_nor_keeps_its_viewer_out()
    -> Result<()> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, "flood").await?;
        let _vm = Vm::start(HYPERVISOR_HOST, VM_PORT).await?;
        let hv = TestHypervisor::vnc("flood").await?;
        let manifest = format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\n\
             metadata: {{name: flooded, namespace: {}}}\n\
             spec:\n  hypervisor: {}\n  vm: {{port: {VM_PORT}}}\n  timeout: 30m\n  \
             viewers: {{policy: shared}}\n",
            ns.name, hv.name
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        let status = ready_status(&sessions, "flooded", WAIT).await?;
        let url = status.url.context("status.url")?;
        let addr = ConsoleUrl::parse(&url)?.socket_addr();

        let stop = CancellationToken::new();
        let holders: Vec<_> = (0..HOLDERS)
            .map(|i| tokio::spawn(hold(addr.clone(), i % 2 == 1, stop.clone())))
            .collect();
        let started = Instant::now();
        let mut waits = Vec::new();
        let checked = async {
            while started.elapsed() < FLOOD {
                let phase = sessions
                    .get("flooded")
                    .await?
                    .status
                    .and_then(|s| s.phase);
                ensure!(
                    phase.is_some_and(SessionPhase::is_open),
                    "{:.0} s into the flood the session is {phase:?}",
                    started.elapsed().as_secs_f64()
                );
                let asked = Instant::now();
                let console = timeout(VIEWER_WITHIN, rfb::open_viewer(&url))
                    .await
                    .with_context(|| {
                        format!(
                            "{:.0} s into the flood a right-token viewer got no console within {VIEWER_WITHIN:?}",
                            started.elapsed().as_secs_f64()
                        )
                    })??;
                waits.push(asked.elapsed().as_secs_f64());
                console.close().await;
                // The next viewer comes in a while: this is a wait between
                // checks of a condition held for the whole flood.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(())
        }
        .await;
        stop.cancel();
        let mut opened = 0;
        for holder in holders {
            opened += holder.await?;
        }
        checked?;

        let pods: Api<Pod> = children_api(&client);
        let pod = pods
            .get(&child_name(&client, &ns.name, "flooded").await?)
            .await?;
        let restarts: i32 = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .iter()
            .map(|c| c.restart_count)
            .sum();
        ensure!(restarts == 0, "the proxy restarted {restarts} time(s)");
        let worst = waits.iter().copied().fold(0.0, f64::max);
        ensure!(waits.len() >= 10, "only {} viewers tried", waits.len());
        eprintln!(
            "{opened} flood connections over {FLOOD:?}; {} viewers got the console, the slowest in {worst:.2} s",
            waits.len()
        );
        record_figures(&json!({
            "test": "flood_on_the_console_port",
            "fault": format!("{HOLDERS} connections from one client holding keep-alive requests and half-sent heads on the console port for {} s", FLOOD.as_secs()),
            "faults_injected": 1,
            "sessions_run": 1,
            "sessions_lost": 0,
            "orphans_left": 0,
            "outcome": format!(
                "session stayed Ready, proxy never restarted; {} right-token viewers each got the console, the slowest in {worst:.2} s ({opened} flood connections)",
                waits.len()
            ),
        }))?;
        Ok(())
    }
}
