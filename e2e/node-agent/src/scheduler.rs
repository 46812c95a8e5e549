//! The scheduler of a one-node cluster: binds every unscheduled pod that asks
//! for the default scheduler to this node, through the `pods/binding`
//! subresource as kube-scheduler does. Pods whose `nodeSelector` the node does
//! not match stay Pending, marked Unschedulable.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const DEFAULT_SCHEDULER: &str = "default-scheduler";
const BIND_ATTEMPTS: u32 = 5;
const BIND_RETRY: Duration = Duration::from_secs(1);

/// What to do with a pod seen without a node.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Bind,
    Unschedulable(String),
    Ignore,
}

/// Pure: whether `pod` should be bound to a node labelled `node_labels`.
pub fn decide(pod: &Pod, node_labels: &BTreeMap<String, String>) -> Decision {
    let Some(spec) = &pod.spec else {
        return Decision::Ignore;
    };
    let ours = spec.scheduler_name.as_deref().unwrap_or(DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER;
    let unscheduled = spec.node_name.as_deref().unwrap_or("").is_empty();
    if !ours || !unscheduled || pod.metadata.deletion_timestamp.is_some() {
        return Decision::Ignore;
    }
    let mismatched: Vec<String> = spec
        .node_selector
        .iter()
        .flatten()
        .filter(|(key, value)| node_labels.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if mismatched.is_empty() {
        Decision::Bind
    } else {
        Decision::Unschedulable(format!(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector ({}).",
            mismatched.join(", ")
        ))
    }
}

/// Watches unscheduled pods until cancelled.
pub async fn run(
    client: Client,
    node_name: String,
    node_labels: BTreeMap<String, String>,
    cancel: CancellationToken,
) {
    let all_pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut pods = std::pin::pin!(
        watcher(all_pods, config)
            .default_backoff()
            .applied_objects()
    );
    loop {
        let pod = tokio::select! {
            () = cancel.cancelled() => return,
            next = pods.next() => match next {
                Some(Ok(pod)) => pod,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "watching unscheduled pods failed; retrying");
                    continue;
                }
                None => return,
            },
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        match decide(&pod, &node_labels) {
            Decision::Bind => bind(&api, &pod, &node_name).await,
            Decision::Unschedulable(message) => mark_unschedulable(&api, &pod, &message).await,
            Decision::Ignore => {}
        }
    }
}

async fn bind(api: &Api<Pod>, pod: &Pod, node_name: &str) {
    let name = pod.name_any();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: pod.namespace(),
            uid: pod.uid(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node_name.into()),
            ..Default::default()
        },
    };
    for attempt in 1..=BIND_ATTEMPTS {
        let result = api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await;
        match result {
            Ok(_) => {
                tracing::info!(pod = %name, namespace = ?pod.namespace(), node = node_name, "bound pod");
                return;
            }
            // Already bound, or gone: nothing left to do.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => return,
            Err(err) => {
                tracing::warn!(pod = %name, attempt, error = %err, "binding failed");
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

async fn mark_unschedulable(api: &Api<Pod>, pod: &Pod, message: &str) {
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.message.as_deref() == Some(message)
            })
        });
    if already {
        return;
    }
    let patch = Patch::Strategic(json!({
        "status": { "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": Time(Timestamp::now()),
        }]}
    }));
    if let Err(err) = api
        .patch_status(&pod.name_any(), &PatchParams::default(), &patch)
        .await
    {
        tracing::warn!(pod = %pod.name_any(), error = %err, "cannot mark pod unschedulable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: &str) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: p}}\nspec: {spec}")).unwrap()
    }

    #[test]
    fn binds_unscheduled_default_scheduler_pods_that_fit() {
        let labels = BTreeMap::from([("kubernetes.io/os".to_owned(), "linux".to_owned())]);
        assert_eq!(decide(&pod("{containers: []}"), &labels), Decision::Bind);
        assert_eq!(
            decide(
                &pod("{containers: [], nodeSelector: {kubernetes.io/os: linux}}"),
                &labels
            ),
            Decision::Bind
        );
        assert!(matches!(
            decide(&pod("{containers: [], nodeSelector: {disk: ssd}}"), &labels),
            Decision::Unschedulable(m) if m.contains("disk=ssd")
        ));
        assert_eq!(
            decide(&pod("{containers: [], schedulerName: other}"), &labels),
            Decision::Ignore
        );
        assert_eq!(
            decide(&pod("{containers: [], nodeName: elsewhere}"), &labels),
            Decision::Ignore
        );
    }
}
