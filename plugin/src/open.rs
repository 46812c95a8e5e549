//! `--open`: hands the URL to the user's browser.

use std::process::{Command, Stdio};

/// The fallback when `$BROWSER` is unset: the desktop's URL opener.
const XDG_OPEN: &str = "xdg-open";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("could not start a browser (tried {tried}); open the URL yourself")]
    NoBrowser { tried: String },
}

/// Starts the browser on `url` without waiting for it. `browser` is `$BROWSER`:
/// a `:`-separated list of commands, each tried in turn, where `%s` stands for
/// the URL (else the URL is appended). Unset or empty: `xdg-open`.
pub fn open(url: &str, browser: Option<&str>) -> Result<(), OpenError> {
    let commands = commands(url, browser);
    for argv in &commands {
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        // The browser's chatter must not mix with the URL on stdout.
        let started = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        if started.is_ok() {
            return Ok(());
        }
    }
    Err(OpenError::NoBrowser {
        tried: commands
            .iter()
            .filter_map(|argv| argv.first().cloned())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The command lines to try, in order.
fn commands(url: &str, browser: Option<&str>) -> Vec<Vec<String>> {
    let entries: Vec<&str> = browser
        .unwrap_or("")
        .split(':')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    if entries.is_empty() {
        return vec![vec![XDG_OPEN.to_string(), url.to_string()]];
    }
    entries
        .into_iter()
        .map(|entry| {
            let mut argv: Vec<String> = entry
                .split_whitespace()
                .map(|word| word.replace("%s", url))
                .collect();
            if !entry.contains("%s") {
                argv.push(url.to_string());
            }
            argv
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://console/#token=abc";

    #[test]
    fn without_browser_it_is_xdg_open() {
        for browser in [None, Some(""), Some(" : ")] {
            assert_eq!(commands(URL, browser), vec![vec!["xdg-open", URL]]);
        }
    }

    #[test]
    fn browser_entries_are_tried_in_order_with_the_url() {
        assert_eq!(
            commands(URL, Some("firefox --new-window:w3m %s")),
            vec![vec!["firefox", "--new-window", URL], vec!["w3m", URL]]
        );
    }

    #[test]
    fn a_missing_browser_is_an_error_naming_what_was_tried() {
        assert_eq!(
            open(URL, Some("/nonexistent/browser-a:/nonexistent/browser-b")),
            Err(OpenError::NoBrowser {
                tried: "/nonexistent/browser-a, /nonexistent/browser-b".into()
            })
        );
    }
}
