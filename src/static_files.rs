//! Files of a `[[static]]` folder, served read-only on the public port.
//!
//! A request path is a URL under the folder's prefix, never a file-system
//! path: each segment is percent-decoded on its own and refused if it could
//! leave the folder or name something hidden (`.`, `..`, a leading dot, an
//! encoded `/` or `\`, a NUL, an empty segment as in `//etc`). The file
//! found is then resolved with every symlink followed and served only if it
//! still lies inside the folder, so a symlink out of it is not followed
//! (tests/daemon/static_files.rs attacks each of these).

use std::io::Read;
use std::path::{Path, PathBuf};

use http_body_util::Full;
use hyper::Method;
use hyper::body::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};

use crate::config::StaticDir;
use crate::http::{self, Response};

/// The `[[static]]` folder whose prefix is the longest one `path` starts
/// with, and the rest of the path after that prefix.
pub fn find<'a, 'p>(statics: &'a [StaticDir], path: &'p str) -> Option<(&'a StaticDir, &'p str)> {
    statics
        .iter()
        .filter_map(|dir| {
            // "/web" is "/web/" without the slash: the folder's index.
            let rest = path
                .strip_prefix(&dir.path)
                .or_else(|| (path == dir.path.trim_end_matches('/')).then_some(""))?;
            Some((dir, rest))
        })
        .max_by_key(|(dir, _)| dir.path.len())
}

/// Answers a request for `rest` (the URL path after the folder's prefix).
pub async fn serve(dir: &StaticDir, method: &Method, rest: &str) -> Response {
    if method != Method::GET {
        return http::error(405, format!("{}{rest} is a static file: use GET", dir.path));
    }
    let relative = match relative_path(rest) {
        Ok(relative) => relative,
        Err(reason) => return http::error(400, reason),
    };
    let (root, max_file) = (dir.dir.clone(), dir.max_file);
    let read = tokio::task::spawn_blocking(move || read_inside(&root, &relative, max_file)).await;
    let (file, body) = match read {
        Ok(Ok(found)) => found,
        Ok(Err((status, reason))) => return http::error(status, reason),
        Err(failed) => return http::error(500, format!("reading a static file failed: {failed}")),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A demo's page changes with the code it shows: always revalidate.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The file a URL path names, relative to the folder; `Err` says why the
/// path is refused. An empty path or one ending in `/` names `index.html`.
fn relative_path(rest: &str) -> Result<PathBuf, String> {
    let mut relative = PathBuf::new();
    let segments: Vec<&str> = rest.split('/').collect();
    for (at, raw) in segments.iter().enumerate() {
        let last = at + 1 == segments.len();
        if raw.is_empty() {
            if last {
                relative.push("index.html");
                break;
            }
            return Err(format!("the path {rest:?} has an empty segment"));
        }
        let segment = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| format!("the path segment {raw:?} is not UTF-8 once decoded"))?;
        if segment.starts_with('.') {
            return Err(format!(
                "the path segment {raw:?} is '.', '..' or hidden; static files have plain names"
            ));
        }
        if segment.contains(['/', '\\', '\0']) {
            return Err(format!("the path segment {raw:?} holds a '/', '\\' or NUL once decoded"));
        }
        relative.push(segment.as_ref());
    }
    Ok(relative)
}

/// Reads `relative` under `root` if, with every symlink followed, it is a
/// file inside `root` of at most `max_file` bytes; the path read and its
/// bytes, or the status and reason.
fn read_inside(root: &Path, relative: &Path, max_file: u64) -> Result<(PathBuf, Vec<u8>), (u16, String)> {
    let not_found = || (404, format!("no file {} in the static folder", relative.display()));
    let root = root
        .canonicalize()
        .map_err(|err| (404, format!("the static folder {} cannot be read: {err}", root.display())))?;
    let file = root.join(relative).canonicalize().map_err(|_| not_found())?;
    if !file.starts_with(&root) {
        tracing::warn!(
            "refused {}: a symlink leads out of the static folder {}",
            relative.display(),
            root.display()
        );
        return Err(not_found());
    }
    // O_NOFOLLOW: the path is canonical, so a symlink at its end now is one
    // put there since, which must not be followed either.
    let opened = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&file)
    };
    let opened = opened.map_err(|_| not_found())?;
    let metadata = opened.metadata().map_err(|_| not_found())?;
    if !metadata.is_file() {
        return Err((404, format!("{} is a folder; ask for {}/", relative.display(), relative.display())));
    }
    if metadata.len() > max_file {
        return Err((
            413,
            format!(
                "{} is {} bytes; this folder serves files of at most {max_file}",
                relative.display(),
                metadata.len()
            ),
        ));
    }
    let mut body = Vec::with_capacity(metadata.len() as usize);
    // Bounded again while reading: the file may grow after the check.
    opened
        .take(max_file + 1)
        .read_to_end(&mut body)
        .map_err(|err| (500, format!("reading {}: {err}", relative.display())))?;
    if body.len() as u64 > max_file {
        return Err((413, format!("{} grew past {max_file} bytes while being read", relative.display())));
    }
    Ok((file, body))
}

/// The content type of a file, by its extension.
fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|ext| ext.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}
