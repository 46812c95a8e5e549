//! The console page's static files, embedded at build time (`build.rs`):
//! noVNC's ES modules under `core/` and `vendor/pako/`, ours under `app/`,
//! laid out as noVNC's own `vnc.html` expects so its relative imports work.
//!
//! Every page response carries the same strict headers: scripts, styles and
//! connections only from the proxy itself, no referrer (the page's URL holds
//! the session's path), no sniffing.

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, ETAG, HeaderName, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::http::{Body, respond};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its path relative to the page, without a leading `/`.
    pub path: &'static str,
    pub content_type: &'static str,
    /// A quoted content hash.
    pub etag: &'static str,
    pub body: &'static [u8],
}

/// Every embedded file, sorted by path.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// `'self'` covers same-origin `ws:`/`wss:` in CSP 3; the explicit
/// schemes keep older browsers connecting. Images come from noVNC's cursor
/// and Tight PNG decoding (`data:` and `blob:` URLs).
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file a request path names. An ingress may keep its path prefix, so
/// the path is matched on its last segments: `/s/ns/name/core/rfb.js` is
/// `core/rfb.js`.
pub fn find(request_path: &str) -> Option<&'static Asset> {
    request_path
        .match_indices('/')
        .map(|(at, _)| &request_path[at + 1..])
        .find_map(|suffix| {
            ASSETS
                .binary_search_by(|a| a.path.cmp(suffix))
                .ok()
                .map(|i| &ASSETS[i])
        })
}

impl Asset {
    /// The file, or `304 Not Modified` when the browser's copy is current.
    /// `no-cache` makes browsers revalidate, since paths carry no version.
    pub fn respond(&self, request: &HeaderMap) -> Response<Body> {
        let fresh = request
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == self.etag));
        let mut response = if fresh {
            respond(StatusCode::NOT_MODIFIED, self.content_type, "")
        } else {
            respond(StatusCode::OK, self.content_type, self.body)
        };
        let headers = response.headers_mut();
        headers.insert(ETAG, HeaderValue::from_static(self.etag));
        secure(headers, "no-cache");
        response
    }
}

/// The headers every page response carries.
pub fn secure(headers: &mut HeaderMap, cache_control: &'static str) {
    let set = |headers: &mut HeaderMap, name: HeaderName, value| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, CACHE_CONTROL, cache_control);
    set(
        headers,
        CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY_VALUE,
    );
    set(headers, X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, REFERRER_POLICY, "no-referrer");
    set(headers, X_FRAME_OPTIONS, "DENY");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn novnc_and_our_files_are_embedded() {
        for path in [
            "core/rfb.js",
            "core/websock.js",
            "core/util/logging.js",
            "vendor/pako/lib/zlib/inflate.js",
            "app/console.js",
            "app/console.css",
        ] {
            assert!(find(&format!("/{path}")).is_some(), "{path} is missing");
        }
        assert!(ASSETS.windows(2).all(|w| w[0].path < w[1].path));
    }

    #[test]
    fn paths_match_under_a_prefix_and_nowhere_else() {
        let asset = find("/s/ns/console-1/core/rfb.js").unwrap();
        assert_eq!(asset.path, "core/rfb.js");
        assert!(find("/core/nope.js").is_none());
        assert!(find("core/rfb.js").is_none(), "paths start with a slash");
        assert!(find("/xcore/rfb.js").is_none());
    }

    #[test]
    fn a_current_copy_is_not_sent_again() {
        let asset = find("/app/console.js").unwrap();
        let mut request = HeaderMap::new();
        let response = asset.respond(&request);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[ETAG], asset.etag);
        request.insert(IF_NONE_MATCH, HeaderValue::from_static(asset.etag));
        assert_eq!(asset.respond(&request).status(), StatusCode::NOT_MODIFIED);
    }
}
