//! `helm upgrade` of a running install keeps sessions alive: the operator's pod
//! is replaced, the session's proxy pod is not, a viewer watching through it
//! keeps its console, and the new operator picks the session up where the old
//! one left it. `helm uninstall` with a session open leaves it ended and free
//! of porthole's finalizer (the chart's pre-delete hook), so nothing waits for
//! an operator that is gone; the test installs porthole again after.
//!
//! Restarting the operator disturbs every other test, so these live in the
//! `disruptive` module: `make e2e` runs those alone, after the rest.

mod disruptive {
    use std::time::Duration;

    use anyhow::{Context as _, Result, bail, ensure};
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use kube::ResourceExt;
    use kube::api::ListParams;
    use porthole_api::v1alpha1::{ConsoleSession, SessionPhase};
    use porthole_e2e::HYPERVISOR_HOST;
    use porthole_e2e::cluster::faults::orphans_after;
    use porthole_e2e::cluster::{
        TestHypervisor, TestNamespace, child_name, children_api, client, helm_path,
        kubeconfig_path, kubectl, ready_status, wait_for_session,
    };
    use porthole_e2e::rfb::{self, ConsoleUrl};
    use porthole_e2e::vm::Vm;
    use tokio::process::Command;

    /// A port no other e2e test serves a VM on.
    const VM_PORT: u16 = 5929;
    const WAIT: Duration = Duration::from_secs(120);
    const RELEASE: &str = "porthole";
    const NAMESPACE: &str = "porthole-system";
    const OPERATOR_LABEL: &str = "app.kubernetes.io/name=porthole-operator";

    /// `helm upgrade` of the installed release, keeping its values but `set`.
    async fn helm_upgrade(set: &str) -> Result<()> {
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/porthole");
        helm(&[
            "upgrade",
            RELEASE,
            chart,
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            "--set",
            set,
            "--wait",
            "--timeout",
            "2m",
        ])
        .await
    }

    /// Names of the operator's running pods.
    async fn operator_pods(pods: &Api<Pod>) -> Result<Vec<String>> {
        let list = pods
            .list(&ListParams::default().labels(OPERATOR_LABEL))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect())
    }

    #[tokio::test]
    async fn helm_upgrade_keeps_a_watched_session_alive() -> Result<()> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, "upgrade").await?;
        let _vm = Vm::start(HYPERVISOR_HOST, VM_PORT).await?;
        let hv = TestHypervisor::vnc("upgrade").await?;
        let manifest = format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\n\
             metadata: {{name: kept, namespace: {}}}\n\
             spec:\n  hypervisor: {}\n  vm: {{port: {VM_PORT}}}\n  timeout: 30m\n",
            ns.name, hv.name
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        let url = ready_status(&sessions, "kept", WAIT)
            .await?
            .url
            .context("status.url")?;
        let url = ConsoleUrl::parse(&url)?;
        let mut viewer = rfb::open(&url, Some(&url.token))
            .await
            .map_err(|refused| anyhow::anyhow!("the console refused its token: {refused:?}"))?;
        let init = viewer.handshake().await?;
        viewer.wait_for_nonzero_frame(&init, WAIT).await?;
        wait_for_session(&ns.name, "kept", "jsonpath={.status.phase}=Connected", WAIT).await?;

        let session_pods: Api<Pod> = children_api(&client);
        let kept = child_name(&client, &ns.name, "kept").await?;
        let proxy_uid = session_pods.get(&kept).await?.metadata.uid;
        let operator: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let before = operator_pods(&operator).await?;
        ensure!(!before.is_empty(), "no operator pod before the upgrade");

        // A changed value changes the operator's pod template: Helm rolls it.
        helm_upgrade("logLevel=debug").await?;
        let after = operator_pods(&operator).await?;
        ensure!(
            !after.is_empty() && after.iter().all(|p| !before.contains(p)),
            "the upgrade should have replaced the operator pods {before:?}, now {after:?}"
        );

        // The viewer's console still works through the same proxy pod.
        viewer
            .wait_for_nonzero_frame(&init, WAIT)
            .await
            .context("the viewer lost its console during the upgrade")?;
        let proxy = session_pods.get(&kept).await?;
        ensure!(
            proxy.metadata.uid == proxy_uid,
            "the upgrade replaced the session's proxy pod"
        );
        let status = sessions.get("kept").await?.status.context("status")?;
        ensure!(
            status.phase == Some(SessionPhase::Connected),
            "after the upgrade: {:?} {:?}",
            status.phase,
            status.reason
        );

        // The new operator follows the session: the viewer leaving shows.
        viewer.close().await;
        wait_for_session(&ns.name, "kept", "jsonpath={.status.viewers.count}=0", WAIT).await?;
        wait_for_session(&ns.name, "kept", "jsonpath={.status.phase}=Ready", WAIT).await?;

        helm_upgrade("logLevel=info").await?;
        Ok(())
    }

    /// Runs helm with `args` on the test cluster; fails with its stderr.
    async fn helm(args: &[&str]) -> Result<()> {
        let output = Command::new(helm_path())
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(args)
            .output()
            .await
            .context("running helm (e2e/scripts/build-controlplane.sh helm builds it)")?;
        if !output.status.success() {
            bail!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// `make install` again: the chart with the test bed's values.
    async fn reinstall() -> Result<()> {
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/porthole");
        let values = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbed-values.yaml");
        helm(&[
            "install",
            RELEASE,
            chart,
            "--namespace",
            NAMESPACE,
            "-f",
            values,
            "--wait",
            "--timeout",
            "3m",
        ])
        .await
    }

    /// Named to run last of this file's tests: it uninstalls porthole, and
    /// installs it again for whatever runs after.
    #[tokio::test]
    async fn uninstalling_the_chart_with_a_session_open_leaves_no_session_stuck() -> Result<()> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, "uninstall").await?;
        let hv = TestHypervisor::vnc("uninstall").await?;
        let manifest = format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\n\
             metadata: {{name: open, namespace: {}}}\n\
             spec:\n  hypervisor: {}\n  vm: {{port: {VM_PORT}}}\n  timeout: 30m\n",
            ns.name, hv.name
        );
        kubectl(&["apply", "-f", "-"], Some(&manifest)).await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        ready_status(&sessions, "open", WAIT).await?;

        let uninstalled = helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
        ])
        .await;
        let checked = async {
            uninstalled?;
            let session = sessions.get("open").await?;
            ensure!(
                session.finalizers().is_empty(),
                "the session keeps finalizers {:?}",
                session.finalizers()
            );
            let status = session.status.context("status")?;
            ensure!(
                status.phase == Some(SessionPhase::Completed)
                    && status.reason.as_deref() == Some("OperatorUninstalled"),
                "after the uninstall: {:?} {:?}",
                status.phase,
                status.reason
            );
            // The machinery is deleted (pods take their grace period to go).
            let orphans = orphans_after(&client, &ns.name, WAIT).await?;
            ensure!(orphans == 0, "{orphans} children outlived the uninstall");
            // Deleting the session needs no operator.
            kubectl(
                &[
                    "-n",
                    &ns.name,
                    "delete",
                    "consolesession",
                    "open",
                    "--timeout=30s",
                ],
                None,
            )
            .await?;
            Ok(())
        }
        .await;
        reinstall().await?;
        checked
    }
}
