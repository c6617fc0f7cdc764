//! File operations confined to a run's workspace: list, read, write.
//!
//! A path is relative to the workspace and may not name anything outside it: absolute
//! paths and `..` are refused before anything is opened, and the path is then opened one
//! component at a time, each relative to the directory opened before it and never through
//! a symbolic link (`O_NOFOLLOW`). A link a script planted, pointing out or in, is reported
//! as [`FileError::Symlink`], never followed, so no rename or link race can lead outside.
//! Only regular files are read or written (a FIFO a script made cannot block the caller).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// The most [`read`] returns and [`write`] accepts unless the caller says otherwise.
pub const DEFAULT_MAX_FILE: u64 = 1024 * 1024;
/// The most entries [`list`] returns.
pub const MAX_ENTRIES: usize = 1000;

/// Why a file operation was refused or failed. `path` is the path the caller gave.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("`{path}` is not a path inside the workspace: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("`{path}` does not exist in the workspace")]
    NotFound { path: String },
    #[error("`{path}` goes through a symbolic link, which is not followed")]
    Symlink { path: String },
    #[error("`{path}` is not a regular file")]
    NotAFile { path: String },
    #[error("`{path}` is not a directory")]
    NotADirectory { path: String },
    #[error("`{path}` is {size} bytes, more than the limit of {limit}")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    /// Bytes, for files; 0 otherwise.
    pub size: u64,
}

/// A directory's entries, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// More than [`MAX_ENTRIES`] entries: the first ones by name are listed.
    pub truncated: bool,
}

/// The entries of directory `rel` (`""` or `"."`: the workspace itself).
pub fn list(root: &Path, rel: &str) -> Result<Listing, FileError> {
    let parts = components(rel, true)?;
    let dir = open_dir_path(root, rel, &parts, false)?;
    let io = |e: std::io::Error| FileError::Io {
        path: rel.to_string(),
        source: e,
    };
    let mut entries = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir).map_err(|e| io(e.into()))? {
        let entry = entry.map_err(|e| io(e.into()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        // The entry may go between reading the directory and this stat: skip it then.
        let Ok(st) = rustix::fs::statat(&dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        let size = if kind == EntryKind::File {
            u64::try_from(st.st_size).unwrap_or(0)
        } else {
            0
        };
        entries.push(Entry { name, kind, size });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = entries.len() > MAX_ENTRIES;
    entries.truncate(MAX_ENTRIES);
    Ok(Listing { entries, truncated })
}

/// The bytes of file `rel`, refused when it is larger than `limit`.
pub fn read(root: &Path, rel: &str, limit: u64) -> Result<Vec<u8>, FileError> {
    let (fd, size) = open_regular(root, rel)?;
    if size > limit {
        return Err(FileError::TooLarge {
            path: rel.to_string(),
            size,
            limit,
        });
    }
    let mut data = Vec::new();
    // The file may grow while it is read: never take more than the limit.
    std::fs::File::from(fd)
        .take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| FileError::Io {
            path: rel.to_string(),
            source: e,
        })?;
    let read = data.len() as u64;
    if read > limit {
        return Err(FileError::TooLarge {
            path: rel.to_string(),
            size: read,
            limit,
        });
    }
    Ok(data)
}

/// A part of a file: at most `max` bytes from byte `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub data: Vec<u8>,
    /// The file's size when it was opened.
    pub size: u64,
}

/// At most `max` bytes of file `rel` from byte `offset` (none past its end), whatever its
/// size: a large file is read a part at a time.
pub fn read_at(root: &Path, rel: &str, offset: u64, max: u64) -> Result<Chunk, FileError> {
    use std::io::{Seek, SeekFrom};
    let (fd, size) = open_regular(root, rel)?;
    let io = |e: std::io::Error| FileError::Io {
        path: rel.to_string(),
        source: e,
    };
    let mut file = std::fs::File::from(fd);
    let mut data = Vec::new();
    if offset < size {
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        file.take(max).read_to_end(&mut data).map_err(io)?;
    }
    Ok(Chunk { data, size })
}

/// Open file `rel` for reading (a regular file, reached without links); its size.
fn open_regular(root: &Path, rel: &str) -> Result<(OwnedFd, u64), FileError> {
    let parts = components(rel, false)?;
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| invalid(rel, "it is empty"))?;
    let dir = open_dir_path(root, rel, dirs, false)?;
    let fd = rustix::fs::openat(
        &dir,
        *last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open_error(&dir, last, rel, e))?;
    let size = regular_size(&fd, rel)?;
    Ok((fd, size))
}

/// Write `data` to file `rel` (replacing what it held), creating the directories on the
/// way. Refused when `data` is larger than `limit`.
pub fn write(root: &Path, rel: &str, data: &[u8], limit: u64) -> Result<(), FileError> {
    let parts = components(rel, false)?;
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| invalid(rel, "it is empty"))?;
    let size = data.len() as u64;
    if size > limit {
        return Err(FileError::TooLarge {
            path: rel.to_string(),
            size,
            limit,
        });
    }
    let dir = open_dir_path(root, rel, dirs, true)?;
    let fd = rustix::fs::openat(
        &dir,
        *last,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| open_error(&dir, last, rel, e))?;
    // Checked before truncating: a FIFO or device is never written to.
    regular_size(&fd, rel)?;
    let io = |e: std::io::Error| FileError::Io {
        path: rel.to_string(),
        source: e,
    };
    rustix::fs::ftruncate(&fd, 0).map_err(|e| io(e.into()))?;
    std::fs::File::from(fd).write_all(data).map_err(io)
}

fn invalid(rel: &str, reason: &'static str) -> FileError {
    FileError::InvalidPath {
        path: rel.to_string(),
        reason,
    }
}

/// The names along `rel`: relative, without `..`; `.` is skipped. An empty path (the
/// workspace itself) only where `allow_root`.
fn components(rel: &str, allow_root: bool) -> Result<Vec<&str>, FileError> {
    if rel.contains('\0') {
        return Err(invalid(rel, "it contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(name) => parts.push(
                name.to_str()
                    .ok_or_else(|| invalid(rel, "it is not UTF-8"))?,
            ),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid(rel, "`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(rel, "absolute paths are not allowed"));
            }
        }
    }
    if parts.is_empty() && !allow_root {
        return Err(invalid(rel, "it names the workspace itself, not a file"));
    }
    Ok(parts)
}

/// Open the workspace root, then each directory of `parts` below it without following
/// links; with `create`, missing directories are made.
fn open_dir_path(
    root: &Path,
    rel: &str,
    parts: &[&str],
    create: bool,
) -> Result<OwnedFd, FileError> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // The workspace itself is not followed either (a run directory swapped for a link);
    // the directories above it are the operator's.
    let mut dir = rustix::fs::openat(CWD, root, dir_flags | OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| {
            let path = rel.to_string();
            match e {
                Errno::NOENT => FileError::NotFound { path },
                Errno::LOOP | Errno::NOTDIR if root.is_symlink() => FileError::Symlink { path },
                e => FileError::Io {
                    path,
                    source: e.into(),
                },
            }
        })?;
    for name in parts {
        if create {
            match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(open_error(&dir, name, rel, e)),
            }
        }
        dir = rustix::fs::openat(&dir, *name, dir_flags | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| open_error(&dir, name, rel, e))?;
    }
    Ok(dir)
}

/// What a failed open of `name` in `dir` means for the caller's path.
fn open_error(dir: &impl AsFd, name: &str, rel: &str, e: Errno) -> FileError {
    let path = rel.to_string();
    match e {
        Errno::NOENT => FileError::NotFound { path },
        Errno::LOOP => FileError::Symlink { path },
        Errno::NOTDIR => {
            // O_DIRECTORY on a link can also answer ENOTDIR: tell the two apart.
            match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    FileError::Symlink { path }
                }
                _ => FileError::NotADirectory { path },
            }
        }
        Errno::ISDIR | Errno::NXIO => FileError::NotAFile { path },
        e => FileError::Io {
            path,
            source: e.into(),
        },
    }
}

/// The size of an open regular file; anything else is refused.
fn regular_size(fd: &OwnedFd, rel: &str) -> Result<u64, FileError> {
    let st = rustix::fs::fstat(fd).map_err(|e| FileError::Io {
        path: rel.to_string(),
        source: e.into(),
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(FileError::NotAFile {
            path: rel.to_string(),
        });
    }
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(tmp.path().join("secret.txt"), "outside").unwrap();
        (tmp, root)
    }

    #[test]
    fn write_then_read_and_list() {
        let (_tmp, root) = setup();
        write(&root, "out/report.json", b"{\"n\":1}", DEFAULT_MAX_FILE).unwrap();
        write(&root, "./notes.txt", b"hi", DEFAULT_MAX_FILE).unwrap();
        assert_eq!(read(&root, "out/report.json", 100).unwrap(), b"{\"n\":1}");
        // Writing again replaces the content.
        write(&root, "notes.txt", b"x", DEFAULT_MAX_FILE).unwrap();
        assert_eq!(read(&root, "notes.txt", 100).unwrap(), b"x");
        let l = list(&root, "").unwrap();
        let names: Vec<(&str, EntryKind, u64)> = l
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            names,
            [
                ("notes.txt", EntryKind::File, 1),
                ("out", EntryKind::Dir, 0)
            ]
        );
        assert!(!l.truncated);
        assert_eq!(list(&root, "out").unwrap().entries[0].name, "report.json");
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused_before_opening() {
        let (_tmp, root) = setup();
        for p in ["../secret.txt", "out/../../secret.txt", "a/.."] {
            assert!(
                matches!(read(&root, p, 100), Err(FileError::InvalidPath { .. })),
                "{p}"
            );
            assert!(matches!(
                write(&root, p, b"x", 100),
                Err(FileError::InvalidPath { .. })
            ));
        }
        let abs = root.parent().unwrap().join("secret.txt");
        let abs = abs.to_str().unwrap();
        assert!(matches!(
            read(&root, abs, 100),
            Err(FileError::InvalidPath { .. })
        ));
        assert!(matches!(
            list(&root, "/"),
            Err(FileError::InvalidPath { .. })
        ));
        assert!(matches!(
            write(&root, "", b"x", 100),
            Err(FileError::InvalidPath { .. })
        ));
        assert!(matches!(
            read(&root, "a\0b", 100),
            Err(FileError::InvalidPath { .. })
        ));
        // Nothing was written next to the workspace.
        assert_eq!(
            std::fs::read_to_string(root.parent().unwrap().join("secret.txt")).unwrap(),
            "outside"
        );
    }

    #[test]
    fn symbolic_links_are_never_followed() {
        let (tmp, root) = setup();
        symlink(tmp.path().join("secret.txt"), root.join("leak")).unwrap();
        symlink(tmp.path(), root.join("up")).unwrap();
        std::fs::write(root.join("inside.txt"), "in").unwrap();
        symlink("inside.txt", root.join("alias")).unwrap();
        for p in ["leak", "up/secret.txt", "alias"] {
            assert!(
                matches!(read(&root, p, 100), Err(FileError::Symlink { .. })),
                "{p}: {:?}",
                read(&root, p, 100)
            );
        }
        assert!(matches!(list(&root, "up"), Err(FileError::Symlink { .. })));
        // A workspace that is itself a link is not entered.
        let swapped = tmp.path().join("swapped");
        symlink(tmp.path(), &swapped).unwrap();
        assert!(matches!(
            read(&swapped, "secret.txt", 100),
            Err(FileError::Symlink { .. })
        ));
        assert!(matches!(list(&swapped, ""), Err(FileError::Symlink { .. })));
        // Writing through a link neither follows it nor replaces it.
        assert!(matches!(
            write(&root, "leak", b"pwned", 100),
            Err(FileError::Symlink { .. })
        ));
        assert!(matches!(
            write(&root, "up/new.txt", b"pwned", 100),
            Err(FileError::Symlink { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("secret.txt")).unwrap(),
            "outside"
        );
        assert!(!tmp.path().join("new.txt").exists());
        let kinds: Vec<EntryKind> = list(&root, "")
            .unwrap()
            .entries
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EntryKind::Symlink,
                EntryKind::File,
                EntryKind::Symlink,
                EntryKind::Symlink
            ]
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let (_tmp, root) = setup();
        write(&root, "big.bin", &[7u8; 2000], DEFAULT_MAX_FILE).unwrap();
        match read(&root, "big.bin", 1000) {
            Err(FileError::TooLarge { size, limit, .. }) => assert_eq!((size, limit), (2000, 1000)),
            other => panic!("{other:?}"),
        }
        assert_eq!(read(&root, "big.bin", 2000).unwrap().len(), 2000);
        assert!(matches!(
            write(&root, "small.bin", &[0u8; 11], 10),
            Err(FileError::TooLarge { size: 11, .. })
        ));
        assert!(!root.join("small.bin").exists());
    }

    #[test]
    fn a_large_file_is_read_a_part_at_a_time() {
        let (tmp, root) = setup();
        write(&root, "big.txt", b"0123456789", DEFAULT_MAX_FILE).unwrap();
        let c = read_at(&root, "big.txt", 4, 3).unwrap();
        assert_eq!((c.data.as_slice(), c.size), (&b"456"[..], 10));
        assert_eq!(read_at(&root, "big.txt", 8, 100).unwrap().data, b"89");
        assert!(read_at(&root, "big.txt", 50, 100).unwrap().data.is_empty());
        symlink(tmp.path().join("secret.txt"), root.join("leak")).unwrap();
        assert!(matches!(
            read_at(&root, "leak", 0, 100),
            Err(FileError::Symlink { .. })
        ));
        assert!(matches!(
            read_at(&root, "../secret.txt", 0, 100),
            Err(FileError::InvalidPath { .. })
        ));
    }

    #[test]
    fn only_regular_files_and_directories_are_used() {
        let (_tmp, root) = setup();
        std::fs::create_dir(root.join("d")).unwrap();
        assert!(matches!(
            read(&root, "d", 100),
            Err(FileError::NotAFile { .. })
        ));
        assert!(matches!(
            write(&root, "d", b"x", 100),
            Err(FileError::NotAFile { .. })
        ));
        std::fs::write(root.join("f"), "x").unwrap();
        assert!(matches!(
            list(&root, "f"),
            Err(FileError::NotADirectory { .. })
        ));
        assert!(matches!(
            read(&root, "f/g", 100),
            Err(FileError::NotADirectory { .. })
        ));
        assert!(matches!(
            read(&root, "missing", 100),
            Err(FileError::NotFound { .. })
        ));
        // A FIFO neither blocks a read nor is written to.
        let fifo = root.join("pipe");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(
            read(&root, "pipe", 100),
            Err(FileError::NotAFile { .. })
        ));
        assert!(matches!(
            write(&root, "pipe", b"x", 100),
            Err(FileError::NotAFile { .. })
        ));
        assert!(matches!(
            list(&root.join("nope"), ""),
            Err(FileError::NotFound { .. })
        ));
    }
}
