//! One cgroup v2 per child, so that stopping a service stops everything it
//! started, also what left its process group (`setsid`, a double fork).
//!
//! The master's groups live in one directory of its own,
//! `<the master's cgroup>/allexmaster-<hash of its runtime directory>`,
//! found from the mount table and `/proc/self/cgroup` (the hierarchy may be
//! mounted anywhere: beside the v1 controllers in hybrid mode it is often
//! `/sys/fs/cgroup/unified`). Its path is recorded in the runtime directory,
//! so the next start of the same master finds and kills what a SIGKILLed
//! start left, even when it runs in another cgroup itself.
//!
//! Each child gets `<root>/<instance>.<n>`: it is cloned into the group
//! (`CLONE_INTO_CGROUP`, see `clone_exec.rs`), so no process of the service
//! ever runs outside it. `cgroup.kill` (Linux
//! 5.14) kills the whole group at once; older kernels get each listed pid
//! SIGKILLed instead.

use allex_protocol::config::Limits;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The file in the runtime directory naming this master's cgroup directory.
pub const RECORD_FILE: &str = "cgroup";

/// How long a killed group may take to empty before it is left for the
/// next sweep (a process in uninterruptible sleep cannot die sooner).
const EMPTY_DEADLINE: Duration = Duration::from_secs(5);

/// Why children cannot get cgroups of their own.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No `cgroup2` line in the mount table.
    #[error("no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo)")]
    NotMounted,
    /// `/proc/self/cgroup` has no `0::` line, or one outside the mount.
    #[error("cannot tell this process's cgroup v2 group from /proc/self/cgroup")]
    NoOwnGroup,
    /// A file or directory of the hierarchy could not be used.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was tried.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The fault.
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup v2 mount in a `/proc/self/mountinfo` text: its mount point
/// and the group of the hierarchy it shows (`/` unless a subtree is mounted).
pub fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((PathBuf::from(unescape(point)), unescape(root)))
    })
}

/// Undoes the mount table's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup v2 group from a `/proc/self/cgroup` text (`0::/path`).
pub fn own_group(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The directory of `group` under a mount of `mount_root` at `point`.
fn group_dir(point: &Path, mount_root: &str, group: &str) -> Option<PathBuf> {
    let rel = if mount_root == "/" {
        group
    } else {
        group.strip_prefix(mount_root)?
    };
    let rel = rel.trim_start_matches('/');
    // A group being deleted shows as "/path (deleted)".
    if rel.ends_with(" (deleted)") {
        return None;
    }
    Some(if rel.is_empty() {
        point.to_path_buf()
    } else {
        point.join(rel)
    })
}

/// The controllers a `cgroup.controllers` text offers that limits use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controllers {
    /// `memory`, for `memory.max`.
    pub memory: bool,
    /// `cpu`, for `cpu.weight`.
    pub cpu: bool,
}

impl Controllers {
    /// Reads a `cgroup.controllers` (or `cgroup.subtree_control`) text.
    pub fn parse(text: &str) -> Controllers {
        let has = |c| text.split_whitespace().any(|w| w == c);
        Controllers {
            memory: has("memory"),
            cpu: has("cpu"),
        }
    }

    /// What `limits` asks for.
    pub fn wanted_by(limits: &Limits) -> Controllers {
        Controllers {
            memory: limits.memorymaxbytes.is_some(),
            cpu: limits.cpuweight.is_some(),
        }
    }

    /// Both sets together.
    pub fn union(self, other: Controllers) -> Controllers {
        Controllers {
            memory: self.memory || other.memory,
            cpu: self.cpu || other.cpu,
        }
    }

    /// The names of those in `self` that `have` lacks.
    pub fn missing_from(self, have: Controllers) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.memory && !have.memory {
            out.push("memory");
        }
        if self.cpu && !have.cpu {
            out.push("cpu");
        }
        out
    }

    fn any(self) -> bool {
        self.memory || self.cpu
    }
}

/// Opens the master's tree for `services` and says at start what it found:
/// what an earlier start left (killed), limits the kernel cannot apply, or
/// that there are no cgroups here at all and process groups must do.
pub fn open_for(
    runtimedir: &Path,
    services: &std::collections::BTreeMap<String, allex_protocol::ServiceSpec>,
) -> Option<std::sync::Arc<Tree>> {
    let limited: Vec<&str> = services
        .iter()
        .filter(|(_, s)| s.limits.is_some_and(|l| !l.is_empty()))
        .map(|(m, _)| m.as_str())
        .collect();
    let want = services
        .values()
        .filter_map(|s| s.limits.as_ref())
        .fold(Controllers::default(), |a, l| {
            a.union(Controllers::wanted_by(l))
        });
    // Both are enabled where offered, so that limits a reload adds apply too.
    let all = Controllers {
        memory: true,
        cpu: true,
    };
    match Tree::open(runtimedir, all) {
        Ok((tree, swept)) => {
            if swept.processes > 0 || swept.groups > 0 {
                tracing::warn!(
                    processes = swept.processes,
                    groups = swept.groups,
                    "killed {} left by an earlier start of this master",
                    match swept.processes {
                        1 => "1 process".to_string(),
                        n => format!("{n} processes"),
                    }
                );
            }
            tracing::info!(dir = %tree.root().display(), "each child gets a cgroup of its own");
            let missing = want.missing_from(tree.enabled());
            if !missing.is_empty() {
                tracing::warn!(
                    modules = ?limited,
                    ?missing,
                    offered = tree.offered(),
                    "cannot apply limits: the cgroup v2 hierarchy offers the master's directory no {} controller; these services run without them",
                    missing.join(" or ")
                );
            }
            Some(std::sync::Arc::new(tree))
        }
        Err(e) => {
            tracing::warn!(
                "no cgroups for the children ({e}): they are tracked by process group only, so what a service starts outside its group (setsid, a double fork) can outlive it"
            );
            if !limited.is_empty() {
                tracing::warn!(modules = ?limited, "cannot apply limits without cgroup v2; these services run without them");
            }
            None
        }
    }
}

/// The master's cgroup directory, where each child gets a group.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    enabled: Controllers,
    /// What the hierarchy offered the master's directory, for messages.
    offered: String,
    next: AtomicU64,
}

/// What a sweep found and killed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Processes that were still alive.
    pub processes: usize,
    /// Groups removed.
    pub groups: usize,
}

impl Tree {
    /// Opens this master's directory: kills and removes what an earlier
    /// start left there (and where the runtime directory's record points),
    /// then enables the controllers `want` needs where the kernel lets it.
    pub fn open(runtimedir: &Path, want: Controllers) -> Result<(Tree, Swept), CgroupError> {
        let proc_mounts = Path::new("/proc/self/mountinfo");
        let mountinfo =
            std::fs::read_to_string(proc_mounts).map_err(io("cannot read", proc_mounts))?;
        let (point, mount_root) = cgroup2_mount(&mountinfo).ok_or(CgroupError::NotMounted)?;
        let proc_cgroup = Path::new("/proc/self/cgroup");
        let own = std::fs::read_to_string(proc_cgroup).map_err(io("cannot read", proc_cgroup))?;
        let own_dir = own_group(&own)
            .and_then(|g| group_dir(&point, &mount_root, g))
            .ok_or(CgroupError::NoOwnGroup)?;
        let root = own_dir.join(format!("allexmaster-{:016x}", fnv1a(runtimedir)));
        let record = runtimedir.join(RECORD_FILE);
        let mut swept = Swept::default();
        if let Ok(text) = std::fs::read_to_string(&record) {
            let previous = PathBuf::from(text.trim());
            // Only a directory of this hierarchy, never one a stray file names.
            if previous != root && previous.starts_with(&point) && previous.is_dir() {
                swept = swept.plus(sweep(&previous, true));
            }
        }
        if root.is_dir() {
            swept = swept.plus(sweep(&root, false));
        } else {
            std::fs::create_dir(&root).map_err(io("cannot create", &root))?;
        }
        write_record(&record, &root)?;
        let enabled = if want.any() {
            enable(&own_dir, &root, want)
        } else {
            Controllers::default()
        };
        // What the directory is offered once enabling was tried, for messages.
        let offered = std::fs::read_to_string(root.join("cgroup.controllers"))
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok((
            Tree {
                root,
                enabled,
                offered,
                next: AtomicU64::new(0),
            },
            swept,
        ))
    }

    /// The master's cgroup directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The controllers the children's groups have.
    pub fn enabled(&self) -> Controllers {
        self.enabled
    }

    /// What the hierarchy offers the master's directory (`cgroup.controllers`).
    pub fn offered(&self) -> &str {
        &self.offered
    }

    /// A new, empty group for a child of `instance`, with `limits` applied
    /// as far as the controllers allow, and its directory opened for the
    /// child to be cloned into (closed once the child is forked, so the
    /// master holds no descriptor per child for it).
    pub fn create(
        &self,
        instance: &str,
        limits: Option<&Limits>,
    ) -> Result<(ServiceGroup, OwnedFd), CgroupError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{instance}.{n}"));
        std::fs::create_dir(&dir).map_err(io("cannot create", &dir))?;
        let group = ServiceGroup { dir };
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
            .open(&group.dir);
        let dirfd = match opened {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                group.remove();
                return Err(io("cannot open", &group.dir)(e));
            }
        };
        if let Some(l) = limits {
            if let (Some(bytes), true) = (l.memorymaxbytes, self.enabled.memory) {
                group.write("memory.max", &bytes.to_string())?;
            }
            if let (Some(w), true) = (l.cpuweight, self.enabled.cpu) {
                group.write("cpu.weight", &w.to_string())?;
            }
        }
        Ok((group, dirfd))
    }

    /// Kills every group left and removes them and the master's directory
    /// (at shutdown, once the children were stopped).
    pub fn remove_all(&self) -> Swept {
        sweep(&self.root, true)
    }
}

/// Turns on `want` for the children: in the master's own group's
/// `cgroup.subtree_control` (refused while the master's group holds
/// processes, unless it is the hierarchy's root) and then in its directory's.
fn enable(own_dir: &Path, root: &Path, want: Controllers) -> Controllers {
    let read = |p: &Path| Controllers::parse(&std::fs::read_to_string(p).unwrap_or_default());
    let mut offered = read(&root.join("cgroup.controllers"));
    let parent_has = read(&own_dir.join("cgroup.controllers"));
    for name in want.missing_from(offered) {
        let present = (name == "memory" && parent_has.memory) || (name == "cpu" && parent_has.cpu);
        if present {
            if let Err(e) = write_file(&own_dir.join("cgroup.subtree_control"), &format!("+{name}"))
            {
                tracing::debug!(controller = name, error = %e, "cannot enable a controller for the master's directory");
            }
        }
    }
    offered = read(&root.join("cgroup.controllers"));
    let mut enabled = Controllers::default();
    for name in want.missing_from(Controllers::default()) {
        let here = (name == "memory" && offered.memory) || (name == "cpu" && offered.cpu);
        if here && write_file(&root.join("cgroup.subtree_control"), &format!("+{name}")).is_ok() {
            match name {
                "memory" => enabled.memory = true,
                _ => enabled.cpu = true,
            }
        }
    }
    enabled
}

/// One child's group.
#[derive(Debug)]
pub struct ServiceGroup {
    dir: PathBuf,
}

impl ServiceGroup {
    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &'static str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        write_file(&path, value).map_err(io("cannot write", &path))
    }

    /// SIGKILLs every process in the group, whatever its process group or session.
    pub fn kill(&self) {
        kill_group(&self.dir);
    }

    /// Sends `sig` to each process the group holds now (the stop signal,
    /// so that a daemon the service forked can stop cleanly too).
    pub fn signal(&self, sig: libc::c_int) {
        signal_each(&self.dir, sig);
    }

    /// Waits (blocking, bounded) until the killed group is empty, then removes it.
    pub fn remove(&self) {
        remove_group(&self.dir);
    }
}

fn kill_group(dir: &Path) {
    if write_file(&dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    // Before Linux 5.14: each pid the group lists (recursively).
    signal_each(dir, libc::SIGKILL);
}

/// Signals each pid listed in `dir` and below. A pid is only listed while
/// its process is in the group, so the window for a recycled pid is the
/// few microseconds between reading the list and the kill.
fn signal_each(dir: &Path, sig: libc::c_int) {
    for pid in pids_in(dir) {
        if let Ok(p) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) takes plain integers; a pid that exited in
            // the meantime fails with ESRCH.
            unsafe { libc::kill(p, sig) };
        }
    }
}

fn remove_group(dir: &Path) {
    wait_empty(dir, Instant::now() + EMPTY_DEADLINE);
    if let Err(e) = remove_tree(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(group = %dir.display(), error = %e, "cannot remove a child's cgroup");
        }
    }
}

/// The pids in `dir` and every group below it.
fn pids_in(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for sub in subgroups(dir) {
        pids.extend(pids_in(&sub));
    }
    pids
}

fn subgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `cgroup.events` says `populated 0`, woken by the kernel's
/// notification on that file (and at least every 100 ms), until `deadline`.
fn wait_empty(dir: &Path, deadline: Instant) -> bool {
    let Ok(mut events) = File::open(dir.join("cgroup.events")) else {
        return true;
    };
    loop {
        let mut text = String::new();
        if events.rewind().is_err() || events.read_to_string(&mut text).is_err() {
            return true;
        }
        if text.lines().any(|l| l.trim() == "populated 0") {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: events.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        let ms = left.min(Duration::from_millis(100)).as_millis() as libc::c_int;
        // SAFETY: poll(2) on one valid pollfd that lives across the call.
        unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
    }
}

/// Removes `dir` and its subgroups, deepest first (cgroup directories go
/// with rmdir, their files with them).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for sub in subgroups(dir) {
        remove_tree(&sub)?;
    }
    std::fs::remove_dir(dir)
}

/// Kills every group under `dir`, waits for them to empty and removes them
/// (and `dir` itself when `and_self`).
fn sweep(dir: &Path, and_self: bool) -> Swept {
    let groups = subgroups(dir);
    let processes = pids_in(dir).len();
    let mut swept = Swept {
        processes,
        groups: 0,
    };
    for g in &groups {
        kill_group(g);
    }
    let deadline = Instant::now() + EMPTY_DEADLINE;
    for g in &groups {
        wait_empty(g, deadline);
        match remove_tree(g) {
            Ok(()) => swept.groups += 1,
            Err(e) => {
                tracing::warn!(group = %g.display(), error = %e, "cannot remove a cgroup left by an earlier start")
            }
        }
    }
    if and_self {
        if let Err(e) = std::fs::remove_dir(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(group = %dir.display(), error = %e, "cannot remove the master's cgroup directory");
            }
        }
    }
    swept
}

impl Swept {
    fn plus(self, o: Swept) -> Swept {
        Swept {
            processes: self.processes + o.processes,
            groups: self.groups + o.groups,
        }
    }
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    // One write(2): the kernel takes each write to these files as one command.
    OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn write_record(record: &Path, root: &Path) -> Result<(), CgroupError> {
    let tmp = record.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", root.display())).map_err(io("cannot write", &tmp))?;
    std::fs::rename(&tmp, record).map_err(io("cannot write", record))
}

/// FNV-1a of a path's bytes: a stable, short name per runtime directory.
fn fnv1a(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_v2_mount_is_found_wherever_it_is_and_v1_is_not_taken_for_it() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".into()))
        );
        let v1_only = HYBRID.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(cgroup2_mount(&v1_only), None);
        let odd = "7 1 0:9 /sub /mnt/my\\040cgroups rw shared:4 - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_mount(odd),
            Some((PathBuf::from("/mnt/my cgroups"), "/sub".into()))
        );
    }

    #[test]
    fn the_own_group_is_read_and_placed_under_the_mount() {
        let text = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/a.service\n";
        assert_eq!(own_group(text), Some("/system.slice/a.service"));
        assert_eq!(own_group("4:memory:/x\n"), None);
        let p = Path::new("/sys/fs/cgroup");
        assert_eq!(group_dir(p, "/", "/"), Some(p.to_path_buf()));
        assert_eq!(
            group_dir(p, "/", "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/a/b"))
        );
        assert_eq!(
            group_dir(p, "/a", "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/b"))
        );
        assert_eq!(group_dir(p, "/a", "/c"), None);
        assert_eq!(group_dir(p, "/", "/gone (deleted)"), None);
    }

    #[test]
    fn controllers_are_read_and_compared() {
        let have = Controllers::parse("cpuset cpu io memory pids\n");
        assert_eq!(
            have,
            Controllers {
                memory: true,
                cpu: true
            }
        );
        let hybrid = Controllers::parse("hugetlb\n");
        let want = Controllers::wanted_by(&Limits {
            memorymaxbytes: Some(1 << 20),
            cpuweight: Some(50),
        });
        assert_eq!(want.missing_from(hybrid), vec!["memory", "cpu"]);
        assert!(want.missing_from(have).is_empty());
    }

    #[test]
    fn the_directory_name_is_stable_per_runtime_directory() {
        assert_eq!(fnv1a(Path::new("/a")), fnv1a(Path::new("/a")));
        assert_ne!(fnv1a(Path::new("/a")), fnv1a(Path::new("/b")));
    }
}
