//! Clean-up across namespaces without owner references: a session's children
//! live in porthole's namespace, so the session's finalizer and the
//! operator's sweep of orphans are what remove them. With the operator down,
//! one session is deleted (its finalizer holds it until the operator is back)
//! and another is forced away without its finalizer (only the sweep can find
//! its children): once the operator is back, nothing of either is left.
//!
//! Stopping the operator disturbs every other test, so this lives in the
//! `disruptive` module: `make e2e` runs those alone, after the rest.

mod disruptive {
    use std::time::Duration;

    use anyhow::{Context as _, Result, ensure};
    use kube::Api;
    use porthole_api::contract::FINALIZER;
    use porthole_api::v1alpha1::ConsoleSession;
    use porthole_e2e::cluster::faults::orphans_after;
    use porthole_e2e::cluster::{
        PORTHOLE_NAMESPACE, TestHypervisor, TestNamespace, child_name, client, eventually, kubectl,
        ready_status, wait_until_children_gone,
    };

    const WAIT: Duration = Duration::from_secs(120);
    /// The sweep runs every minute, and leaves children younger than 30 s.
    const SWEEP: Duration = Duration::from_secs(150);
    const DEPLOYMENT: &str = "deployment/porthole-operator";

    async fn scale_operator(replicas: u8) -> Result<()> {
        kubectl(
            &[
                "-n",
                PORTHOLE_NAMESPACE,
                "scale",
                DEPLOYMENT,
                &format!("--replicas={replicas}"),
            ],
            None,
        )
        .await?;
        let condition = if replicas == 0 {
            "delete"
        } else {
            "condition=Ready"
        };
        eventually(
            WAIT,
            &format!("the operator at {replicas} replica(s)"),
            || async {
                let out = porthole_e2e::cluster::kubectl_output(
                    &[
                        "-n",
                        PORTHOLE_NAMESPACE,
                        "wait",
                        &format!("--for={condition}"),
                        "pod",
                        "-l",
                        "app.kubernetes.io/name=porthole-operator",
                        "--timeout=10s",
                    ],
                    None,
                )
                .await?;
                let none_left =
                    String::from_utf8_lossy(&out.stderr).contains("no matching resources");
                let done = if replicas == 0 {
                    out.status.success() || none_left
                } else {
                    out.status.success()
                };
                Ok(done.then_some(()))
            },
        )
        .await
    }

    fn session(ns: &str, name: &str, hypervisor: &str, port: u16) -> String {
        format!(
            "apiVersion: porthole.dev/v1alpha1\nkind: ConsoleSession\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  hypervisor: {hypervisor}\n  vm: {{port: {port}}}\n"
        )
    }

    #[tokio::test]
    async fn sessions_deleted_while_the_operator_is_down_leave_nothing_once_it_is_back()
    -> Result<()> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, "cleanup").await?;
        let hv = TestHypervisor::vnc("cleanup").await?;
        let sessions: Api<ConsoleSession> = Api::namespaced(client.clone(), &ns.name);
        for (name, port) in [("held", 5923), ("forced", 5924)] {
            kubectl(
                &["apply", "-f", "-"],
                Some(&session(&ns.name, name, &hv.name, port)),
            )
            .await?;
        }
        for name in ["held", "forced"] {
            ready_status(&sessions, name, WAIT).await?;
            let finalizers = sessions.get(name).await?.metadata.finalizers;
            ensure!(
                finalizers.is_some_and(|f| f.iter().any(|f| f == FINALIZER)),
                "{name} carries porthole's finalizer"
            );
        }
        let held = child_name(&client, &ns.name, "held").await?;
        let forced = child_name(&client, &ns.name, "forced").await?;

        scale_operator(0).await?;
        let result = async {
            kubectl(
                &[
                    "-n",
                    &ns.name,
                    "delete",
                    "consolesession",
                    "held",
                    "--wait=false",
                ],
                None,
            )
            .await?;
            // Gone at once: someone removed the finalizer by hand.
            kubectl(
                &[
                    "-n",
                    &ns.name,
                    "patch",
                    "consolesession",
                    "forced",
                    "--type=json",
                    "-p",
                    r#"[{"op": "remove", "path": "/metadata/finalizers"}]"#,
                ],
                None,
            )
            .await?;
            kubectl(
                &["-n", &ns.name, "delete", "consolesession", "forced"],
                None,
            )
            .await?;
            let waiting = sessions.get("held").await?;
            ensure!(
                waiting.metadata.deletion_timestamp.is_some(),
                "the deleted session waits for the operator"
            );
            Ok::<_, anyhow::Error>(())
        }
        .await;
        // Back up whatever happened, or every later test would fail.
        scale_operator(1).await?;
        result?;

        eventually(WAIT, "the held session to be deleted", || async {
            Ok(sessions.get_opt("held").await?.is_none().then_some(()))
        })
        .await?;
        wait_until_children_gone(&client, &held, WAIT)
            .await
            .context("the finalizer's cleanup")?;
        wait_until_children_gone(&client, &forced, SWEEP)
            .await
            .context("the sweep of children whose session is gone")?;
        let orphans = orphans_after(&client, &ns.name, WAIT).await?;
        ensure!(orphans == 0, "{orphans} children left behind");
        Ok(())
    }
}
