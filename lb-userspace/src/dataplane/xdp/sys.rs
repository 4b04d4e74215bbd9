//! The bpf(2) calls aya 0.14 does not offer, on maps aya opened: many entries per call
//! (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_UPDATE_BATCH`), an entry taken out with the value it
//! had at that moment (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`), and an array created with
//! `BPF_F_MMAPABLE` mapped into this process's memory.
//!
//! The attribute layouts come from aya-obj's kernel bindings (the ones aya itself uses).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
};

use aya::Pod;
use aya_obj::generated::{bpf_attr, bpf_cmd};

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, initialised bpf_attr of the size passed; the pointers it
    // carries were set by the callers to buffers that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Where a batch read of a hash map stands (the kernel's opaque position: a bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchCursor {
    position: Option<u32>,
    done: bool,
}

impl BatchCursor {
    /// Whether the whole map has been read.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Read the next entries of hash map `map` after `cursor` into `keys` and `values` (of
/// equal length, at least a hash bucket's worth); how many were read. The cursor is done
/// once the end is reached (that call may still return entries). Entries added or removed
/// meanwhile may be missed or seen, as with any walk of a live table.
pub fn lookup_batch<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    cursor: &mut BatchCursor,
    keys: &mut [K],
    values: &mut [V],
) -> io::Result<usize> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    if cursor.done {
        return Ok(0);
    }
    let in_batch = cursor.position.unwrap_or(0);
    let mut out_batch = 0u32;
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.batch.in_batch = match cursor.position {
        Some(_) => (&raw const in_batch) as u64,
        None => 0,
    };
    attr.batch.out_batch = (&raw mut out_batch) as u64;
    attr.batch.keys = keys.as_mut_ptr() as u64;
    attr.batch.values = values.as_mut_ptr() as u64;
    attr.batch.count = keys.len() as u32;
    attr.batch.map_fd = map.as_raw_fd() as u32;
    let result = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
    // SAFETY: the kernel wrote back the count it filled.
    let count = unsafe { attr.batch.count } as usize;
    match result {
        Ok(()) => {
            cursor.position = Some(out_batch);
            Ok(count)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            cursor.done = true;
            Ok(count)
        }
        Err(e) => Err(e),
    }
}

/// Write `keys[i]` → `values[i]` into `map` (any map type with batch updates: hash maps,
/// arrays), `flags` per element (`BPF_ANY` 0).
pub fn update_batch<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    flags: u64,
) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut done = 0;
    while done < keys.len() {
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // The kernel only reads the buffers.
        attr.batch.keys = keys[done..].as_ptr() as u64;
        attr.batch.values = values[done..].as_ptr() as u64;
        attr.batch.count = (keys.len() - done) as u32;
        attr.batch.map_fd = map.as_raw_fd() as u32;
        attr.batch.elem_flags = flags;
        let result = bpf(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr);
        // SAFETY: the kernel wrote back how many it updated.
        let count = unsafe { attr.batch.count } as usize;
        result?;
        if count == 0 {
            return Err(io::Error::other("the kernel updated no entry of the batch"));
        }
        done += count;
    }
    Ok(())
}

/// Take `key` out of hash map `map`: the value it held when it was removed, or `None` if
/// it was not there.
pub fn lookup_and_delete<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    element(
        bpf_cmd::BPF_MAP_LOOKUP_AND_DELETE_ELEM,
        map,
        key,
        std::mem::MaybeUninit::<V>::zeroed(),
        0,
    )
}

/// An array map created with `BPF_F_MMAPABLE`, mapped shared into this process: reads and
/// atomic writes here are the kernel's own memory of the map.
pub struct MappedArray {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access through it is atomic or a
// plain read of integers, which is sound from any thread.
unsafe impl Send for MappedArray {}
// SAFETY: as above.
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Map the `entries` values of `value_size` bytes of array `map`.
    pub fn map(map: BorrowedFd<'_>, value_size: usize, entries: u32) -> io::Result<Self> {
        // The kernel lays the values out every round_up(value_size, 8) bytes.
        let stride = value_size.next_multiple_of(8);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = (stride * entries as usize).next_multiple_of(page);
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the length.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self { base, len })
    }

    /// The address of byte `offset` of the mapping, if it is within it with `size` bytes.
    pub fn at(&self, offset: usize, size: usize) -> Option<NonNull<u8>> {
        (offset.checked_add(size)? <= self.len)
            // SAFETY: the offset is within the mapping.
            .then(|| unsafe { self.base.add(offset) })
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The descriptor of a map aya opened (of the kinds the balancer has).
pub fn fd_of(map: &aya::maps::Map) -> Option<BorrowedFd<'_>> {
    use std::os::fd::AsFd as _;

    use aya::maps::Map;
    match map {
        Map::Array(data) | Map::HashMap(data) | Map::LruHashMap(data) | Map::PerCpuArray(data) => {
            Some(data.fd().as_fd())
        }
        _ => None,
    }
}

/// `key`'s value in hash map `map`, or `None`.
pub fn lookup<K: Pod, V: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    element(
        bpf_cmd::BPF_MAP_LOOKUP_ELEM,
        map,
        key,
        std::mem::MaybeUninit::<V>::zeroed(),
        0,
    )
}

/// Set `key` to `value` in `map`; `flags`: `BPF_ANY` (0), `BPF_NOEXIST` (1), `BPF_EXIST`
/// (2). Whether it was written (`false`: `BPF_NOEXIST` and the key exists, or `BPF_EXIST`
/// and it does not).
pub fn update<K: Pod, V: Pod>(
    map: BorrowedFd<'_>,
    key: &K,
    value: &V,
    flags: u64,
) -> io::Result<bool> {
    let value = std::mem::MaybeUninit::new(*value);
    match element(bpf_cmd::BPF_MAP_UPDATE_ELEM, map, key, value, flags) {
        Ok(Some(_)) => Ok(true),
        Ok(None) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove `key` from hash map `map`; whether it was there.
pub fn delete<K: Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<bool> {
    // SAFETY: all-zero is a valid bpf_attr; the kernel refuses any field after the key.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the element member of the union we own; `key` outlives the call.
    unsafe {
        let elem = &mut attr.__bindgen_anon_2;
        elem.map_fd = map.as_raw_fd() as u32;
        elem.key = (key as *const K) as u64;
    }
    match bpf(bpf_cmd::BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One element command; `None` when the kernel says the key is not there.
fn element<K: Pod, V: Copy>(
    cmd: bpf_cmd,
    map: BorrowedFd<'_>,
    key: &K,
    mut value: std::mem::MaybeUninit<V>,
    flags: u64,
) -> io::Result<Option<V>> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the element member of the union we own; `key` and `value` outlive
    // the call.
    unsafe {
        let elem = &mut attr.__bindgen_anon_2;
        elem.map_fd = map.as_raw_fd() as u32;
        elem.key = (key as *const K) as u64;
        elem.__bindgen_anon_1.value = value.as_mut_ptr() as u64;
        elem.flags = flags;
    }
    match bpf(cmd, &mut attr) {
        // SAFETY: the value was initialised (zeroed, by the caller, or by the kernel), and
        // any bit pattern is valid for the plain-data types used here.
        Ok(()) => Ok(Some(unsafe { value.assume_init() })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
