//! `--web DIR`: static files, for serving noVNC beside the WebSocket.

use std::io;
use std::path::{Component, Path, PathBuf};

use http::Response;
use http::StatusCode;

use crate::http::{Body, respond, text};

/// The file a request path names under `root`, or `None` when it tries to
/// leave it.
pub fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let relative = Path::new(request_path.trim_start_matches('/'));
    let mut path = root.to_path_buf();
    for component in relative.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Serves one file; a directory serves its `index.html`.
pub async fn serve(root: &Path, request_path: &str) -> Response<Body> {
    let Some(mut path) = resolve(root, request_path) else {
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    };
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        path.push("index.html");
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => respond(StatusCode::OK, content_type(&path), bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read file");
            text(StatusCode::FORBIDDEN, "forbidden\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_inside_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(
            resolve(root, "/vnc.html"),
            Some(PathBuf::from("/srv/web/vnc.html"))
        );
        assert_eq!(
            resolve(root, "/app/./ui.js"),
            Some(PathBuf::from("/srv/web/app/ui.js"))
        );
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/web")));
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/app/../../etc/passwd"), None);
    }
}
