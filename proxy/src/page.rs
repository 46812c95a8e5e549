//! The console page served at the session's root and at `vnc.html`: a small
//! template of ours around noVNC (see [`crate::assets`]), filled in per
//! session with what the page script needs.

use std::time::Duration;

use jiff::Timestamp;
use porthole_api::contract::{TOKEN_SUBPROTOCOL_PREFIX, WEBSOCKET_PATH};

/// The page's template; `{{name}}` placeholders are filled in, escaped.
const TEMPLATE: &str = include_str!("../web/console.html");

/// What the page shows and needs, from the session's settings.
#[derive(Clone, Debug, Default)]
pub struct Page<'a> {
    pub vm_name: &'a str,
    /// The hard limit, which the page counts down to.
    pub expires_at: Option<Timestamp>,
    /// To say "after N minutes without input".
    pub idle_timeout: Option<Duration>,
    pub view_only: bool,
}

impl Page<'_> {
    /// The page, every value escaped so none can inject markup.
    pub fn render(&self) -> String {
        let expires_at = self.expires_at.map(|t| t.to_string()).unwrap_or_default();
        let idle = self
            .idle_timeout
            .map(|t| t.as_secs().to_string())
            .unwrap_or_default();
        [
            ("vm", self.vm_name),
            ("token_prefix", TOKEN_SUBPROTOCOL_PREFIX),
            ("socket", WEBSOCKET_PATH),
            ("expires_at", &expires_at),
            ("idle_seconds", &idle),
            ("view_only", if self.view_only { "true" } else { "false" }),
        ]
        .iter()
        .fold(TEMPLATE.to_string(), |page, (name, value)| {
            page.replace(&format!("{{{{{name}}}}}"), &escape(value))
        })
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Refused;
    use crate::assets;
    use porthole_api::contract::{EndReason, UpstreamFailure};

    #[test]
    fn names_the_vm_without_letting_it_inject_markup() {
        let page = Page {
            vm_name: "<script>alert(1)</script> & \"co\"",
            ..Page::default()
        }
        .render();
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;co&quot;"));
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("{{"), "a placeholder is left");
    }

    #[test]
    fn carries_the_settings_the_script_needs() {
        let page = Page {
            vm_name: "vm",
            expires_at: Some("2030-01-01T12:00:00Z".parse().unwrap()),
            idle_timeout: Some(Duration::from_secs(600)),
            view_only: true,
        }
        .render();
        for attribute in [
            format!("data-token-prefix=\"{TOKEN_SUBPROTOCOL_PREFIX}\""),
            format!("data-socket=\"{WEBSOCKET_PATH}\""),
            "data-expires-at=\"2030-01-01T12:00:00Z\"".to_string(),
            "data-idle-seconds=\"600\"".to_string(),
            "data-view-only=\"true\"".to_string(),
        ] {
            assert!(page.contains(&attribute), "{attribute} missing");
        }
    }

    /// Local, relative URLs only: no CDN, and an ingress path prefix works.
    #[test]
    fn references_only_embedded_files_by_relative_url() {
        let page = Page::default().render();
        let urls = ["src=\"", "href=\""].iter().flat_map(|attribute| {
            page.split(attribute)
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap_or_default())
        });
        let mut count = 0;
        for url in urls {
            count += 1;
            assert!(!url.contains("//") && !url.starts_with('/'), "{url}");
            assert!(
                assets::find(&format!("/{url}")).is_some(),
                "{url} is not embedded"
            );
        }
        assert_eq!(count, 2);
        let script = assets::find("/app/console.js").unwrap().body;
        let script = std::str::from_utf8(script).unwrap();
        assert!(script.contains("from \"../core/rfb.js\""));
        assert!(
            !script.contains("://"),
            "the script loads nothing from elsewhere"
        );
    }

    /// The script turns every close reason the proxy sends into words.
    #[test]
    fn the_script_explains_every_reason() {
        let script = std::str::from_utf8(assets::find("/app/console.js").unwrap().body).unwrap();
        let reasons = [
            EndReason::Completed,
            EndReason::Expired,
            EndReason::Idle,
            EndReason::NeverConnected,
            EndReason::UpstreamClosed,
        ]
        .map(|r| r.to_string());
        let refusals = [Refused::Occupied, Refused::AlreadyUsed].map(|r| r.to_string());
        for reason in reasons.iter().chain(&refusals) {
            assert!(script.contains(&format!("\"{reason}\"")), "{reason}");
        }
        let failed = EndReason::upstream_failed(UpstreamFailure::Protocol, "").to_string();
        let prefix = failed.split(':').next().unwrap_or_default();
        assert!(script.contains(&format!("\"{prefix}:\"")));
        let unrecorded = EndReason::recording_failed("").to_string();
        assert!(
            script.contains(&format!("\"{unrecorded}\"")),
            "{unrecorded}"
        );
        // Each kind of upstream failure has words of its own.
        for failure in UpstreamFailure::ALL {
            assert!(
                script.contains(&format!("\"{}\":", failure.label())),
                "{failure}"
            );
        }
    }
}
