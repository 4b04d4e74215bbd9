//! Debian's stock kernel for the guest: the package `linux-image-amd64` points to, fetched
//! with `apt-get download`, unpacked with `dpkg-deb -x`, `modules.dep` made with
//! `busybox depmod`, and the uncompressed `vmlinux` taken out of `vmlinuz` (it boots
//! faster, through PVH). Cached outside the clone (`/var/cache/lb-vm`, or `target/vm` if
//! that is not writable), one directory per package version; every step is skipped when
//! its result is there, and each result appears by a rename, so an interrupted run leaves
//! nothing half done.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// The metapackage that depends on the current kernel of the release.
const METAPACKAGE: &str = "linux-image-amd64";
const SYSTEM_CACHE: &str = "/var/cache/lb-vm";
const APT_LISTS: &str = "/var/lib/apt/lists";

/// An unpacked kernel package.
pub struct Kernel {
    /// `uname -r` of the guest, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The package's files (`boot/`, `lib/modules/<release>/`).
    pub root: PathBuf,
    pub vmlinux: PathBuf,
}

impl Kernel {
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The kernel, fetched and unpacked unless cached.
pub fn prepare() -> anyhow::Result<Kernel> {
    let cache = cache_dir()?;
    let _lock = lock(&cache.join("lock"))?;
    let (package, version) = match resolve(&cache) {
        Ok(resolved) => resolved,
        Err(e) => match newest_cached(&cache) {
            Some(cached) => {
                eprintln!(
                    "vm: cannot ask apt for the current kernel ({e:#}); using the cached one"
                );
                cached
            }
            None => return Err(e),
        },
    };
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("unexpected kernel package name {package}"))?
        .to_owned();
    let dir = cache.join(format!("{package}_{version}"));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = dir.join("root");
    let mut did_something = false;
    if !root.is_dir() {
        did_something = true;
        unpack(&dir, &package, &version, &release, &root)?;
    }
    let kernel = Kernel {
        vmlinux: dir.join("vmlinux"),
        release,
        root,
    };
    if !kernel.modules_dir().join("modules.dep").is_file() {
        bail!("{} has no modules.dep", kernel.modules_dir().display());
    }
    if !kernel.vmlinux.is_file() {
        did_something = true;
        eprintln!("vm: extracting the uncompressed vmlinux from vmlinuz");
        let vmlinuz = kernel
            .root
            .join("boot")
            .join(format!("vmlinuz-{}", kernel.release));
        let image =
            fs::read(&vmlinuz).with_context(|| format!("cannot read {}", vmlinuz.display()))?;
        let elf = decompress(payload(&image)?)?;
        write_atomically(&kernel.vmlinux, &elf)?;
    }
    if !did_something {
        eprintln!(
            "vm: kernel {package} {version}: cached in {}",
            dir.display()
        );
    }
    Ok(kernel)
}

/// `/var/cache/lb-vm` if we can write there, else `target/vm` of this clone.
fn cache_dir() -> anyhow::Result<PathBuf> {
    let system = PathBuf::from(SYSTEM_CACHE);
    if fs::create_dir_all(&system).is_ok() && is_writable(&system) {
        return Ok(system);
    }
    let local = cmd::target_dir().join("vm");
    fs::create_dir_all(&local).with_context(|| format!("cannot create {}", local.display()))?;
    Ok(local)
}

fn is_writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(probe);
    ok
}

/// The kernel package `linux-image-amd64` depends on and its version, remembered in
/// `resolved` as long as apt's package lists stay the same (apt-cache takes about 1 s).
fn resolve(cache: &Path) -> anyhow::Result<(String, String)> {
    let remembered = cache.join("resolved");
    let lists = fs::metadata(APT_LISTS)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| format!("{}.{:09}", since.as_secs(), since.subsec_nanos()))
        .unwrap_or_default();
    if let Ok(text) = fs::read_to_string(&remembered) {
        let fields: Vec<&str> = text.split('\t').map(str::trim).collect();
        if let [stamp, package, version] = fields[..]
            && stamp == lists
        {
            return Ok((package.to_owned(), version.to_owned()));
        }
    }
    let show =
        cmd::output(Command::new("apt-cache").args(["show", "--no-all-versions", METAPACKAGE]))?;
    // Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
    let (package, version) = show
        .lines()
        .filter_map(|line| line.strip_prefix("Depends:"))
        .flat_map(|depends| depends.split(','))
        .filter_map(|dependency| {
            let (package, version) = dependency.trim().split_once(" (= ")?;
            let version = version.strip_suffix(')')?;
            package
                .starts_with("linux-image-")
                .then(|| (package.to_owned(), version.to_owned()))
        })
        .next()
        .with_context(|| {
            format!(
                "apt-cache show {METAPACKAGE}: no exact linux-image-* dependency (apt-get update?)"
            )
        })?;
    let _ = fs::write(remembered, format!("{lists}\t{package}\t{version}\n"));
    Ok((package, version))
}

/// The most recently unpacked kernel in the cache, for when apt cannot be asked.
fn newest_cached(cache: &Path) -> Option<(String, String)> {
    fs::read_dir(cache)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("vmlinux").is_file())
        .filter_map(|entry| {
            let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
            let name = entry.file_name().into_string().ok()?;
            let (package, version) = name.split_once('_')?;
            Some((modified, (package.to_owned(), version.to_owned())))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, resolved)| resolved)
}

/// Download the package into `dir`, unpack it into `root` and make its `modules.dep`
/// (the package has none); the .deb is removed after.
fn unpack(
    dir: &Path,
    package: &str,
    version: &str,
    release: &str,
    root: &Path,
) -> anyhow::Result<()> {
    let deb = dir.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if !deb.is_file() {
        eprintln!("vm: downloading {package} {version} (apt-get download, about 70 MB)");
        cmd::output(
            Command::new("apt-get")
                .current_dir(dir)
                .args(["download", "-q"])
                // As root apt would drop to the _apt user, which cannot write to the
                // cache directory, and warn that it downloads as root instead.
                .args(["-o", "APT::Sandbox::User=root"])
                .arg(format!("{package}={version}")),
        )?;
        if !deb.is_file() {
            bail!("apt-get download left no {}", deb.display());
        }
    }
    eprintln!("vm: unpacking {} (dpkg-deb -x)", deb.display());
    let partial = dir.join("root.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    cmd::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    eprintln!("vm: making modules.dep (busybox depmod)");
    cmd::output(
        Command::new("busybox")
            .arg("depmod")
            .arg("-b")
            .arg(&partial)
            .arg(release),
    )?;
    fs::rename(&partial, root)?;
    fs::remove_file(&deb)?;
    Ok(())
}

/// The compressed kernel inside a bzImage: the setup header (x86 boot protocol 2.08+)
/// gives its offset and length; its magic says how it is compressed.
fn payload(image: &[u8]) -> anyhow::Result<&[u8]> {
    let u32_at = |offset: usize| {
        image
            .get(offset..offset + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("vmlinuz is not a bzImage (no HdrS)");
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248).context("short header")?;
    let length = u32_at(0x24c).context("short header")?;
    image
        .get(start..start + length)
        .context("the payload lies outside vmlinuz")
}

/// Decompress the payload with the tool its magic names; it must give an ELF image.
fn decompress(payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let tool: &[&str] = if payload.starts_with(b"\xfd7zXZ\0") {
        // The build appends the uncompressed size after the stream.
        &["xz", "-dc", "--single-stream"]
    } else if payload.starts_with(b"\x1f\x8b") {
        &["gzip", "-dc"]
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        &["zstd", "-dcq"]
    } else {
        bail!(
            "vmlinuz: unknown compression (magic {:02x?})",
            &payload[..payload.len().min(6)]
        );
    };
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", tool[0]))?;
    let mut stdin = child.stdin.take().expect("piped");
    let elf = std::thread::scope(|scope| {
        // Feed from another thread: the tool's output fills its pipe long before the
        // input is consumed.
        scope.spawn(move || stdin.write_all(payload));
        child.wait_with_output()
    })?;
    // gzip complains about (and exits 2 for) trailing bytes; the image is what counts.
    if !elf.stdout.starts_with(b"\x7fELF") {
        bail!("{} gave no ELF image ({})", tool.join(" "), elf.status);
    }
    Ok(elf.stdout)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    fs::write(&partial, bytes).with_context(|| format!("cannot write {}", partial.display()))?;
    fs::rename(&partial, path)?;
    Ok(())
}

/// An exclusive lock on the cache (held until the file is dropped), so that two first
/// runs do not unpack at once.
fn lock(path: &Path) -> anyhow::Result<fs::File> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}
