//! Embeds the console page's static files: noVNC's ES modules from npm
//! (`web/node_modules`, installed by `web/vendor.sh`) and our own `web/*.js`
//! and `web/*.css`. The proxy then serves them itself: no CDN, works
//! air-gapped. Writes `$OUT_DIR/assets.rs`, a sorted table of
//! [`Asset`](crate::assets::Asset)s.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

/// Where npm puts noVNC, and the parts of it the page loads.
const NOVNC: &str = "web/node_modules/@novnc/novnc";
const NOVNC_DIRS: [&str; 2] = ["core", "vendor/pako/lib"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = manifest.join("web");
    let novnc = manifest.join(NOVNC);
    println!("cargo::rerun-if-changed=web");
    println!("cargo::rerun-if-changed={NOVNC}/package.json");
    if !novnc.join("core/rfb.js").is_file() {
        eprintln!(
            "error: noVNC is missing from {}: run proxy/web/vendor.sh (or make deps)",
            novnc.display()
        );
        std::process::exit(1);
    }

    let mut assets: Vec<(String, PathBuf)> = Vec::new();
    for dir in NOVNC_DIRS {
        for file in files(&novnc.join(dir)) {
            if file.extension().is_some_and(|e| e == "js") {
                let relative = file.strip_prefix(&novnc).expect("under noVNC");
                assets.push((url_path(relative), file));
            }
        }
    }
    let ours = fs::read_dir(&web).unwrap_or_else(|e| panic!("cannot list {}: {e}", web.display()));
    for entry in ours {
        let file = entry.expect("a directory entry").path();
        if file.is_file() && file.extension().is_some_and(|e| e == "js" || e == "css") {
            let name = file.file_name().expect("a file").to_string_lossy();
            assets.push((format!("app/{name}"), file));
        }
    }
    assets.sort();

    let mut out = String::from("&[\n");
    for (path, file) in &assets {
        let bytes =
            fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let content_type = match file.extension().and_then(|e| e.to_str()) {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            other => panic!("no content type for {other:?}"),
        };
        writeln!(
            out,
            "    Asset {{ path: {path:?}, content_type: {content_type:?}, etag: \"\\\"{:016x}\\\"\", body: include_bytes!({:?}) }},",
            fnv1a(&bytes),
            file.display().to_string(),
        )
        .expect("writing to a String");
    }
    out.push_str("]\n");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    fs::write(out_dir.join("assets.rs"), out).expect("cannot write assets.rs");
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

fn url_path(relative: &Path) -> String {
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A content hash for the ETag: 64-bit FNV-1a, stable across builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
