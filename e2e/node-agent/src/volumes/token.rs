//! Service account tokens for projected volumes, from the TokenRequest API,
//! bound to the pod and refreshed before they expire (as kubelet's token manager).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// The API default for `expirationSeconds`.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// Tokens are renewed at the latest this long after being issued.
const MAX_TOKEN_AGE: SignedDuration = SignedDuration::from_hours(24);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    namespace: String,
    service_account: String,
    pod_uid: String,
    audience: Option<String>,
    expiration_seconds: i64,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub refresh_at: Timestamp,
}

pub struct TokenManager {
    client: Client,
    issued: Mutex<HashMap<TokenKey, IssuedToken>>,
}

impl TokenManager {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            issued: Mutex::default(),
        }
    }

    /// A valid token for `projection` in `pod`, requested only when the cached
    /// one is due for refresh.
    pub async fn token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<IssuedToken, kube::Error> {
        let spec = pod.spec.as_ref();
        let key = TokenKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            audience: projection.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: projection
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        };
        if let Some(issued) = self.lock().get(&key)
            && Timestamp::now() < issued.refresh_at
        {
            return Ok(issued.clone());
        }
        let issued = self.request(pod, &key).await?;
        self.lock().insert(key, issued.clone());
        Ok(issued)
    }

    /// Drops the tokens of a pod that is gone.
    pub fn forget_pod(&self, pod_uid: &str) {
        self.lock().retain(|key, _| key.pod_uid != pod_uid);
    }

    async fn request(&self, pod: &Pod, key: &TokenKey) -> Result<IssuedToken, kube::Error> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: key.audience.iter().cloned().collect(),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &key.namespace);
        let issued_at = Timestamp::now();
        let response = accounts
            .create_token_request(&key.service_account, &PostParams::default(), &request)
            .await?;
        let granted_seconds = response
            .spec
            .expiration_seconds
            .unwrap_or(key.expiration_seconds);
        let status = response
            .status
            .ok_or_else(|| kube::Error::Service("TokenRequest response has no status".into()))?;
        Ok(IssuedToken {
            refresh_at: refresh_time(issued_at, status.expiration_timestamp.0, granted_seconds),
            token: status.token,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, IssuedToken>> {
        self.issued
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// With 20% of the token's lifetime left, and at most a day after issue.
fn refresh_time(issued_at: Timestamp, expires_at: Timestamp, granted_seconds: i64) -> Timestamp {
    let margin = Duration::from_secs(granted_seconds.max(0) as u64 / 5);
    let before_expiry = expires_at
        .checked_sub(SignedDuration::try_from(margin).unwrap_or(SignedDuration::ZERO))
        .unwrap_or(expires_at);
    let max_age = issued_at.checked_add(MAX_TOKEN_AGE).unwrap_or(expires_at);
    before_expiry.min(max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_with_a_fifth_left_or_after_a_day() {
        let issued: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let hour = issued.checked_add(SignedDuration::from_hours(1)).unwrap();
        let expected: Timestamp = "2026-01-01T00:48:00Z".parse().unwrap();
        assert_eq!(refresh_time(issued, hour, 3600), expected);

        let year = issued
            .checked_add(SignedDuration::from_hours(24 * 365))
            .unwrap();
        let day: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(refresh_time(issued, year, 3607), day);
    }
}
