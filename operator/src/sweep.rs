//! Removes children whose session is gone. Children live in porthole's
//! namespace, apart from their sessions, so no owner reference lets the
//! garbage collector do it: the finalizer covers a session deleted while the
//! operator runs, this sweep whatever escapes it (a finalizer removed by
//! hand, a session force-deleted, a crash between two deletions).

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta};
use kube::{Client, Resource, ResourceExt};
use porthole_api::contract::labels;
use porthole_api::v1alpha1::ConsoleSession;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// How often the sweep runs.
const EVERY: Duration = Duration::from_secs(60);
/// A child younger than this is left alone: its session may have been
/// created after the sessions were listed.
pub const GRACE: SignedDuration = SignedDuration::from_secs(30);

/// Whether a child, by its labels and age, belongs to no session in `live`
/// and is at least `grace` old.
pub fn is_orphan(
    child_labels: &std::collections::BTreeMap<String, String>,
    created: Option<Timestamp>,
    live: &HashSet<String>,
    grace: SignedDuration,
    now: Timestamp,
) -> bool {
    let Some(uid) = child_labels.get(labels::SESSION_UID) else {
        // Not ours to judge: made before children carried their session's uid.
        return false;
    };
    let old_enough = created.is_some_and(|at| at + grace <= now);
    old_enough && !live.contains(uid)
}

/// Sweeps at once, then every [`EVERY`]. Each pass lists the sessions
/// afresh (their metadata only) rather than trusting a cache: a child is
/// deleted only if no session with its uid exists in the API server now.
pub async fn run(client: Client, namespace: String) {
    let sessions: Api<ConsoleSession> = Api::all(client.clone());
    let mut every = tokio::time::interval(EVERY);
    loop {
        every.tick().await;
        let live = match sessions.list_metadata(&ListParams::default()).await {
            Ok(list) => list.items.iter().filter_map(|s| s.uid()).collect(),
            Err(error) => {
                warn!(%error, "could not list sessions to sweep their orphaned children");
                continue;
            }
        };
        match sweep(&client, &namespace, &live, GRACE).await {
            Ok(0) => {}
            Ok(swept) => info!(swept, "deleted children whose session is gone"),
            Err(error) => warn!(%error, "could not sweep orphaned session children"),
        }
    }
}

/// One pass over every kind of child; how many were deleted.
pub async fn sweep(
    client: &Client,
    namespace: &str,
    live: &HashSet<String>,
    grace: SignedDuration,
) -> kube::Result<usize> {
    Ok(sweep_kind::<Pod>(client, namespace, live, grace).await?
        + sweep_kind::<Service>(client, namespace, live, grace).await?
        + sweep_kind::<Secret>(client, namespace, live, grace).await?
        + sweep_kind::<NetworkPolicy>(client, namespace, live, grace).await?
        + sweep_kind::<Ingress>(client, namespace, live, grace).await?)
}

async fn sweep_kind<K>(
    client: &Client,
    namespace: &str,
    live: &HashSet<String>,
    grace: SignedDuration,
) -> kube::Result<usize>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{}={},{}",
        labels::MANAGED_BY,
        labels::OPERATOR_NAME,
        labels::SESSION_UID
    );
    // Metadata only: Secrets' data never crosses the wire for this.
    let children = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    let now = Timestamp::now();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut deleted = 0;
    for child in children.items {
        let created = child.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if !is_orphan(child.labels(), created, live, grace, now) {
            continue;
        }
        delete(&api, &kind, &child).await?;
        deleted += 1;
    }
    Ok(deleted)
}

async fn delete<K>(api: &Api<K>, kind: &str, child: &PartialObjectMeta<K>) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = child.name_any();
    info!(
        kind,
        name,
        session = child
            .annotations()
            .get(porthole_api::contract::annotations::SESSION)
            .map(String::as_str)
            .unwrap_or("?"),
        "deleting a child whose session is gone"
    );
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labelled(uid: Option<&str>) -> BTreeMap<String, String> {
        uid.map(|u| BTreeMap::from([(labels::SESSION_UID.to_string(), u.to_string())]))
            .unwrap_or_default()
    }

    #[test]
    fn a_child_of_a_session_that_is_gone_is_an_orphan_once_past_the_grace() {
        let now = Timestamp::now();
        let old = Some(now - SignedDuration::from_secs(60));
        let live = HashSet::from(["alive".to_string()]);
        assert!(is_orphan(&labelled(Some("gone")), old, &live, GRACE, now));
        assert!(!is_orphan(&labelled(Some("alive")), old, &live, GRACE, now));
        // Just made: its session may be newer than the list of sessions.
        let new = Some(now - SignedDuration::from_secs(5));
        assert!(!is_orphan(&labelled(Some("gone")), new, &live, GRACE, now));
        // Unless no session can come (uninstalling): then age does not matter.
        let no_grace = SignedDuration::ZERO;
        assert!(is_orphan(
            &labelled(Some("gone")),
            new,
            &live,
            no_grace,
            now
        ));
        // Without the uid label, it is not ours to judge.
        assert!(!is_orphan(&labelled(None), old, &live, GRACE, now));
    }
}
