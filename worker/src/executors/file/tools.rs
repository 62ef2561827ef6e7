//! What each file tool does, once its payload is read: blocking calls on
//! the root's directory handle, bounded by the executor's caps.

use super::root::{Root, display, io_error};
use super::{FileOptions, FileTool, FileToolError};
use base64::Engine;
use cap_std::fs::{Dir, DirEntry, FileType, OpenOptions};
use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes of a file looked at to tell text from binary (a NUL byte).
const SNIFF: usize = 8000;
/// Characters of a matching line kept in a `file.grep` result.
const LINE_CHARS: usize = 500;

/// How `file.write` and `file.read` carry content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    /// UTF-8 text.
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Base64 of the bytes.
    Base64,
}

/// What `file.write` does when the file is there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WriteMode {
    /// Replace it (written under a temporary name, then renamed).
    #[default]
    Overwrite,
    /// Fail.
    Create,
    /// Add to its end.
    Append,
}

/// Which entries `file.find` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindFilter {
    #[default]
    Any,
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadPayload {
    path: String,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WritePayload {
    path: String,
    content: String,
    #[serde(default)]
    encoding: Option<Encoding>,
    #[serde(default)]
    mode: Option<WriteMode>,
    #[serde(default)]
    create_dirs: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditPayload {
    path: String,
    old: String,
    new: String,
    #[serde(default)]
    replace_all: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrepPayload {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    case_insensitive: Option<bool>,
    #[serde(default)]
    max_results: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindPayload {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    kind: Option<KindFilter>,
    #[serde(default)]
    max_results: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListPayload {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    max_results: Option<usize>,
}

/// A glob as `file.find` and `file.grep` use it: without a `/` it matches
/// an entry's name, with one the path relative to the root.
#[derive(Debug)]
struct PathGlob {
    matcher: GlobMatcher,
    whole_path: bool,
}

impl PathGlob {
    fn new(pattern: &str) -> Result<Self, String> {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("bad glob {pattern:?}: {e}"))?;
        Ok(PathGlob {
            matcher: glob.compile_matcher(),
            whole_path: pattern.contains('/'),
        })
    }

    fn matches(&self, rel: &Path) -> bool {
        if self.whole_path {
            self.matcher.is_match(display(rel))
        } else {
            rel.file_name()
                .is_some_and(|name| self.matcher.is_match(Path::new(name)))
        }
    }
}

/// A payload read and compiled, ready to run.
#[derive(Debug)]
pub(super) struct Task(Parsed);

#[derive(Debug)]
enum Parsed {
    Read(ReadPayload),
    Write(WritePayload, Vec<u8>),
    Edit(EditPayload),
    Grep(GrepPayload, regex::bytes::Regex, Option<PathGlob>),
    Find(FindPayload, PathGlob),
    List(ListPayload),
}

impl Task {
    /// Reads `payload` as `tool`'s; the error says what is wrong with it.
    pub(super) fn parse(tool: FileTool, payload: &Value) -> Result<Task, String> {
        fn read<T: serde::de::DeserializeOwned>(payload: &Value) -> Result<T, String> {
            serde_json::from_value(payload.clone()).map_err(|e| e.to_string())
        }
        Ok(Task(match tool {
            FileTool::Read => Parsed::Read(read(payload)?),
            FileTool::Write => {
                let p: WritePayload = read(payload)?;
                let bytes = match p.encoding.unwrap_or_default() {
                    Encoding::Utf8 => p.content.as_bytes().to_vec(),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD
                        .decode(p.content.trim())
                        .map_err(|e| format!("`content` is not base64: {e}"))?,
                };
                Parsed::Write(p, bytes)
            }
            FileTool::Edit => {
                let p: EditPayload = read(payload)?;
                if p.old.is_empty() {
                    return Err("`old` is empty".into());
                }
                Parsed::Edit(p)
            }
            FileTool::Grep => {
                let p: GrepPayload = read(payload)?;
                let re = regex::bytes::RegexBuilder::new(&p.pattern)
                    .case_insensitive(p.case_insensitive.unwrap_or(false))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("bad pattern: {e}"))?;
                let glob = p.glob.as_deref().map(PathGlob::new).transpose()?;
                Parsed::Grep(p, re, glob)
            }
            FileTool::Find => {
                let p: FindPayload = read(payload)?;
                let glob = PathGlob::new(&p.pattern)?;
                Parsed::Find(p, glob)
            }
            FileTool::List => Parsed::List(read(payload)?),
        }))
    }
}

/// Runs a task; the result is the success receipt's body.
pub(super) fn run(
    root: &Root,
    options: &FileOptions,
    task: Task,
    stop: &AtomicBool,
) -> Result<Value, FileToolError> {
    match task.0 {
        Parsed::Read(p) => read(root, options, p),
        Parsed::Write(p, bytes) => write(root, options, p, bytes),
        Parsed::Edit(p) => edit(root, options, p),
        Parsed::Grep(p, re, glob) => grep(root, options, p, &re, glob.as_ref(), stop),
        Parsed::Find(p, glob) => find(root, options, p, &glob, stop),
        Parsed::List(p) => list(root, options, p, stop),
    }
}

fn read(root: &Root, options: &FileOptions, p: ReadPayload) -> Result<Value, FileToolError> {
    let rel = root.relative(&p.path)?;
    let mut f = root.dir().open(&rel).map_err(|e| io_error(&rel, e))?;
    let meta = f.metadata().map_err(|e| io_error(&rel, e))?;
    if !meta.is_file() {
        return Err(FileToolError::WrongType {
            path: display(&rel),
            expected: "file",
        });
    }
    let size = meta.len();
    let offset = p.offset.unwrap_or(0).min(size);
    // A payload may ask for less than the cap, never more.
    let want = p
        .max_bytes
        .unwrap_or(options.max_read_bytes)
        .min(options.max_read_bytes);
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error(&rel, e))?;
    let mut bytes = Vec::new();
    f.take(want)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(&rel, e))?;
    let truncated = offset + (bytes.len() as u64) < size;
    let (content, encoding) = text_or_base64(bytes, truncated);
    Ok(json!({
        "path": display(&rel),
        "size": size,
        "offset": offset,
        "bytes": content.1,
        "content": content.0,
        "encoding": encoding,
        "truncated": truncated,
    }))
}

/// UTF-8 text (a character cut by the cap is left out), else base64.
fn text_or_base64(mut bytes: Vec<u8>, cut: bool) -> ((String, usize), &'static str) {
    if cut
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
    {
        bytes.truncate(e.valid_up_to());
    }
    let n = bytes.len();
    match String::from_utf8(bytes) {
        Ok(text) => ((text, n), "utf-8"),
        Err(e) => (
            (
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                n,
            ),
            "base64",
        ),
    }
}

/// The directory a path is in, opened, and its last component.
fn parent_and_name(
    root: &Root,
    rel: &Path,
    create_dirs: bool,
) -> Result<(Dir, String), FileToolError> {
    let name = match rel.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        _ => {
            return Err(FileToolError::BadPath {
                path: display(rel),
                message: "names no file".into(),
            });
        }
    };
    let parent = rel
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if create_dirs {
        root.dir()
            .create_dir_all(parent)
            .map_err(|e| io_error(parent, e))?;
    }
    let dir = root
        .dir()
        .open_dir(parent)
        .map_err(|e| match io_error(parent, e) {
            FileToolError::NotFound { path } => FileToolError::BadPath {
                path: display(rel),
                message: format!("its directory {path} does not exist (set `create_dirs`)"),
            },
            other => other,
        })?;
    Ok((dir, name))
}

/// Writes `bytes` as `name` in `dir` under a temporary name, then renames it
/// over the old one: a reader sees the old file or the new, never half. A
/// symlink at `name` is replaced, not followed.
fn replace_file(
    dir: &Dir,
    name: &str,
    bytes: &[u8],
    permissions: Option<cap_std::fs::Permissions>,
    shown: &str,
) -> Result<(), FileToolError> {
    let io = |e: std::io::Error| FileToolError::Io {
        path: shown.to_owned(),
        source: e,
    };
    let tmp = format!(
        ".{name}.chit-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let result = (|| {
        let mut f = dir.open_with(&tmp, OpenOptions::new().write(true).create_new(true))?;
        f.write_all(bytes)?;
        if let Some(p) = permissions {
            f.set_permissions(p)?;
        }
        f.sync_all()?;
        drop(f);
        dir.rename(&tmp, dir, name)
    })();
    if result.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    result.map_err(io)
}

fn write(
    root: &Root,
    options: &FileOptions,
    p: WritePayload,
    bytes: Vec<u8>,
) -> Result<Value, FileToolError> {
    if !options.writable {
        return Err(FileToolError::ReadOnly);
    }
    if bytes.len() as u64 > options.max_write_bytes {
        return Err(FileToolError::TooLarge {
            what: "the content".into(),
            size: bytes.len() as u64,
            limit: "max_write_bytes",
            max: options.max_write_bytes,
        });
    }
    let rel = root.relative(&p.path)?;
    let shown = display(&rel);
    let (dir, name) = parent_and_name(root, &rel, p.create_dirs.unwrap_or(false))?;
    let existing = dir.symlink_metadata(&name).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(FileToolError::WrongType {
            path: shown,
            expected: "file",
        });
    }
    let mode = p.mode.unwrap_or_default();
    let io = |e: std::io::Error| io_error(&rel, e);
    match mode {
        WriteMode::Overwrite => {
            let keep = existing
                .as_ref()
                .filter(|m| m.is_file())
                .map(|m| m.permissions());
            replace_file(&dir, &name, &bytes, keep, &shown)?;
        }
        WriteMode::Create => {
            let mut f = dir
                .open_with(&name, OpenOptions::new().write(true).create_new(true))
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        FileToolError::Exists {
                            path: shown.clone(),
                        }
                    } else {
                        io(e)
                    }
                })?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        WriteMode::Append => {
            let mut f = dir
                .open_with(&name, OpenOptions::new().append(true).create(true))
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
    }
    tracing::info!(path = %shown, bytes = bytes.len(), ?mode, "file.write");
    Ok(json!({
        "path": shown,
        "bytes_written": bytes.len(),
        "sha256": hex::encode(Sha256::digest(&bytes)),
        "created": existing.is_none(),
    }))
}

fn edit(root: &Root, options: &FileOptions, p: EditPayload) -> Result<Value, FileToolError> {
    if !options.writable {
        return Err(FileToolError::ReadOnly);
    }
    let rel = root.relative(&p.path)?;
    let shown = display(&rel);
    let (dir, name) = parent_and_name(root, &rel, false)?;
    let io = |e: std::io::Error| io_error(&rel, e);
    let link = dir.symlink_metadata(&name).map_err(io)?;
    if link.is_symlink() {
        // The edit would replace the link with a copy of its target.
        return Err(FileToolError::BadPath {
            path: shown,
            message: "is a symlink; edit the file it points to".into(),
        });
    }
    let f = dir.open(&name).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileToolError::WrongType {
            path: shown,
            expected: "file",
        });
    }
    if meta.len() > options.max_read_bytes {
        return Err(FileToolError::TooLarge {
            what: shown,
            size: meta.len(),
            limit: "max_read_bytes",
            max: options.max_read_bytes,
        });
    }
    let mut bytes = Vec::new();
    f.take(options.max_read_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|_| FileToolError::NotText {
        path: shown.clone(),
    })?;
    let count = text.matches(p.old.as_str()).count();
    let replace_all = p.replace_all.unwrap_or(false);
    let edited = match count {
        0 => return Err(FileToolError::NoMatch { path: shown }),
        1 => text.replacen(p.old.as_str(), &p.new, 1),
        n if !replace_all => {
            return Err(FileToolError::Ambiguous {
                path: shown,
                count: n,
            });
        }
        _ => text.replace(p.old.as_str(), &p.new),
    };
    if edited.len() as u64 > options.max_write_bytes {
        return Err(FileToolError::TooLarge {
            what: "the edited file".into(),
            size: edited.len() as u64,
            limit: "max_write_bytes",
            max: options.max_write_bytes,
        });
    }
    replace_file(
        &dir,
        &name,
        edited.as_bytes(),
        Some(meta.permissions()),
        &shown,
    )?;
    tracing::info!(path = %shown, replacements = count, "file.edit");
    Ok(json!({
        "path": shown,
        "replacements": count,
        "bytes_written": edited.len(),
        "sha256": hex::encode(Sha256::digest(edited.as_bytes())),
    }))
}

/// Why a walk stopped early.
#[derive(Debug, Default)]
struct Walked {
    entries: usize,
    limit: Option<&'static str>,
}

/// What a walk calls with each entry: its root-relative path, the entry and
/// its type (a symlink is a symlink); `Break` stops the walk.
type Visit<'a> =
    dyn FnMut(&Path, &DirEntry, FileType) -> Result<ControlFlow<()>, FileToolError> + 'a;

/// Walks the directory `start` (relative to the root) depth first, in name
/// order, without following symlinks, calling `visit` with each entry's
/// root-relative path. Stops after `max_files_walked` entries, when `visit`
/// breaks, or when `stop` is set.
fn walk(
    root: &Root,
    start: &Path,
    options: &FileOptions,
    stop: &AtomicBool,
    visit: &mut Visit<'_>,
) -> Result<Walked, FileToolError> {
    let first = root.dir().open_dir(start).map_err(|e| io_error(start, e))?;
    let mut stack: Vec<(Dir, PathBuf)> = vec![(first, start.to_path_buf())];
    let mut walked = Walked::default();
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<DirEntry> = dir
            .entries()
            .map_err(|e| io_error(&rel, e))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            if stop.load(Ordering::Relaxed) {
                walked.limit = Some("cancelled");
                return Ok(walked);
            }
            if walked.entries == options.max_files_walked {
                walked.limit = Some("max_files_walked");
                return Ok(walked);
            }
            walked.entries += 1;
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = if rel == Path::new(".") {
                PathBuf::from(entry.file_name())
            } else {
                rel.join(entry.file_name())
            };
            if visit(&path, &entry, kind)?.is_break() {
                walked.limit = Some("max_results");
                return Ok(walked);
            }
            if kind.is_dir() {
                // Opened through the parent's handle, beneath it: a directory
                // swapped for a symlink since it was listed cannot lead out.
                if let Ok(sub) = entry.open_dir() {
                    subdirs.push((sub, path));
                }
            }
        }
        // Reversed, so the stack pops them in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(walked)
}

fn kind_name(kind: FileType) -> &'static str {
    if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "dir"
    } else if kind.is_file() {
        "file"
    } else {
        "other"
    }
}

fn results_cap(asked: Option<usize>, options: &FileOptions) -> usize {
    asked
        .unwrap_or(options.max_results)
        .min(options.max_results)
}

/// Searches one opened file; `false` when the results are full.
fn grep_file(
    file: cap_std::fs::File,
    rel: &Path,
    re: &regex::bytes::Regex,
    options: &FileOptions,
    cap: usize,
    matches: &mut Vec<Value>,
    skipped: &mut (usize, usize),
) -> Result<bool, FileToolError> {
    let meta = file.metadata().map_err(|e| io_error(rel, e))?;
    if meta.len() > options.max_read_bytes {
        skipped.1 += 1;
        return Ok(true);
    }
    let mut bytes = Vec::new();
    file.take(options.max_read_bytes)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(rel, e))?;
    if bytes[..bytes.len().min(SNIFF)].contains(&0) {
        skipped.0 += 1;
        return Ok(true);
    }
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if !re.is_match(line) {
            continue;
        }
        if matches.len() == cap {
            return Ok(false);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        let text: String = text.chars().take(LINE_CHARS).collect();
        matches.push(json!({"path": display(rel), "line": i + 1, "text": text}));
    }
    Ok(true)
}

fn grep(
    root: &Root,
    options: &FileOptions,
    p: GrepPayload,
    re: &regex::bytes::Regex,
    glob: Option<&PathGlob>,
    stop: &AtomicBool,
) -> Result<Value, FileToolError> {
    let start = root.relative(p.path.as_deref().unwrap_or("."))?;
    let cap = results_cap(p.max_results, options);
    let mut matches = Vec::new();
    let mut skipped = (0usize, 0usize);
    let mut files = 0usize;
    let meta = root
        .dir()
        .metadata(&start)
        .map_err(|e| io_error(&start, e))?;
    let walked = if meta.is_file() {
        let file = root.dir().open(&start).map_err(|e| io_error(&start, e))?;
        files = 1;
        let more = grep_file(file, &start, re, options, cap, &mut matches, &mut skipped)?;
        Walked {
            entries: 1,
            limit: (!more).then_some("max_results"),
        }
    } else {
        walk(root, &start, options, stop, &mut |rel, entry, kind| {
            if !kind.is_file() || glob.is_some_and(|g| !g.matches(rel)) {
                return Ok(ControlFlow::Continue(()));
            }
            let Ok(file) = entry.open() else {
                return Ok(ControlFlow::Continue(()));
            };
            files += 1;
            let more = grep_file(file, rel, re, options, cap, &mut matches, &mut skipped)?;
            Ok(if more {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            })
        })?
    };
    Ok(json!({
        "matches": matches,
        "files_searched": files,
        "entries_walked": walked.entries,
        "truncated": walked.limit.is_some(),
        "limit": walked.limit,
        "skipped_binary": skipped.0,
        "skipped_too_large": skipped.1,
    }))
}

fn find(
    root: &Root,
    options: &FileOptions,
    p: FindPayload,
    glob: &PathGlob,
    stop: &AtomicBool,
) -> Result<Value, FileToolError> {
    let start = root.relative(p.path.as_deref().unwrap_or("."))?;
    let cap = results_cap(p.max_results, options);
    let filter = p.kind.unwrap_or_default();
    let mut found = Vec::new();
    let walked = walk(root, &start, options, stop, &mut |rel, entry, kind| {
        let wanted = match filter {
            KindFilter::Any => true,
            KindFilter::File => kind.is_file(),
            KindFilter::Dir => kind.is_dir(),
            KindFilter::Symlink => kind.is_symlink(),
        };
        if !wanted || !glob.matches(rel) {
            return Ok(ControlFlow::Continue(()));
        }
        if found.len() == cap {
            return Ok(ControlFlow::Break(()));
        }
        let size = entry.metadata().map(|m| m.len()).ok();
        found.push(json!({"path": display(rel), "kind": kind_name(kind), "size": size}));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(json!({
        "paths": found,
        "entries_walked": walked.entries,
        "truncated": walked.limit.is_some(),
        "limit": walked.limit,
    }))
}

fn list(
    root: &Root,
    options: &FileOptions,
    p: ListPayload,
    stop: &AtomicBool,
) -> Result<Value, FileToolError> {
    let rel = root.relative(p.path.as_deref().unwrap_or("."))?;
    let dir = root.dir().open_dir(&rel).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOTDIR) {
            FileToolError::WrongType {
                path: display(&rel),
                expected: "directory",
            }
        } else {
            io_error(&rel, e)
        }
    })?;
    let cap = results_cap(p.max_results, options);
    let mut entries = Vec::new();
    let mut limit = None;
    for (walked, entry) in dir.entries().map_err(|e| io_error(&rel, e))?.enumerate() {
        if stop.load(Ordering::Relaxed) {
            limit = Some("cancelled");
            break;
        }
        if walked == options.max_files_walked {
            limit = Some("max_files_walked");
            break;
        }
        let Ok(entry) = entry else { continue };
        entries.push(entry);
    }
    entries.sort_by_key(|e| e.file_name());
    if entries.len() > cap {
        entries.truncate(cap);
        limit = limit.or(Some("max_results"));
    }
    let listed: Vec<Value> = entries
        .iter()
        .map(|e| {
            let meta = e.metadata().ok();
            let kind = e.file_type().map(kind_name).unwrap_or("other");
            let modified = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t.into_std()).to_rfc3339());
            json!({
                "name": e.file_name().to_string_lossy(),
                "kind": kind,
                "size": meta.as_ref().map(|m| m.len()),
                "modified": modified,
            })
        })
        .collect();
    Ok(json!({
        "path": display(&rel),
        "entries": listed,
        "truncated": limit.is_some(),
        "limit": limit,
    }))
}
