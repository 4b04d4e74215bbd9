//! Katran next to us, per packet, timed the same way in the same process: many
//! BPF_PROG_TEST_RUN calls of repeat=1 on CPU 0, the mean kernel time per call, minus the
//! mean of a trivial XDP_PASS program timed the same way (Katran's tester's method).
//!
//! Katran's balancer (`balancer.bpf.o`) is loaded with libbpf, opened at run time
//! (`libbpf.so.1`; aya cannot load Katran's map-in-map LRU), and its maps are set up as
//! Katran's userspace sets them: a per-CPU LRU of 1,000,000 flows in `lru_mapping[0]`, the
//! gateway MAC in `ctl_array[0]`, one TCP VIP 10.200.1.1:80 in `vip_map` with 100 IPIP
//! reals on a 65,537-slot Maglev ring. Ours is the balancer configured from a
//! keepalived.conf the same shape: one TCP VIP 10.200.1.1:80, `lb_kind TUN`, `lb_algo mh`,
//! 100 reals. Without libbpf or Katran's object, the caller says so and measures ours.

use std::{
    ffi::{CString, c_char, c_int, c_void},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use anyhow::{Context, bail};

/// Katran's constants (its `balancer_consts.h` and the shapes of its maps).
const RING_SIZE: u32 = 65_537;
const LRU_SIZE: u32 = 1_000_000;
const REALS: u32 = 100;
/// `struct flow_key` (40 bytes) and `struct real_pos_lru` (16 bytes).
const FLOW_KEY_SIZE: u32 = 40;
const REAL_POS_SIZE: u32 = 16;
const BPF_MAP_TYPE_LRU_HASH: c_int = 9;
const BPF_PROG_TYPE_XDP: c_int = 6;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The VIP both balancers serve, and an address that is no VIP.
pub const VIP: [u8; 4] = [10, 200, 1, 1];
pub const NOT_VIP: [u8; 4] = [10, 200, 9, 9];

/// The libbpf calls used, looked up in `libbpf.so.1`.
struct Libbpf {
    handle: *mut c_void,
    open_file: unsafe extern "C" fn(*const c_char, *const c_void) -> *mut c_void,
    find_map_by_name: unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void,
    set_inner_map_fd: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    load: unsafe extern "C" fn(*mut c_void) -> c_int,
    find_program_by_name: unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void,
    program_fd: unsafe extern "C" fn(*const c_void) -> c_int,
    find_map_fd_by_name: unsafe extern "C" fn(*const c_void, *const c_char) -> c_int,
    map_create: unsafe extern "C" fn(c_int, *const c_char, u32, u32, u32, *const c_void) -> c_int,
    map_update: unsafe extern "C" fn(c_int, *const c_void, *const c_void, u64) -> c_int,
    close: unsafe extern "C" fn(*mut c_void),
    set_print: unsafe extern "C" fn(*const c_void) -> *const c_void,
}

/// A looked-up function address as the function pointer type `F`.
///
/// # Safety
/// `address` must be a function of type `F`.
unsafe fn cast<F: Copy>(address: *mut c_void) -> F {
    assert_eq!(size_of::<F>(), size_of::<*mut c_void>());
    // SAFETY: same size; the caller vouches for the type.
    unsafe { std::mem::transmute_copy(&address) }
}

impl Libbpf {
    fn open() -> anyhow::Result<Self> {
        // SAFETY: dlopen of a library by name; the handle lives as long as `Self`.
        let handle = unsafe { libc::dlopen(c"libbpf.so.1".as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            bail!("libbpf.so.1 is not installed (Debian: libbpf1)");
        }
        let symbol = |name: &str| -> anyhow::Result<*mut c_void> {
            let name_c = CString::new(name)?;
            // SAFETY: dlsym on a valid handle with a NUL-terminated name.
            let address = unsafe { libc::dlsym(handle, name_c.as_ptr()) };
            if address.is_null() {
                bail!("libbpf.so.1 has no {name}");
            }
            Ok(address)
        };
        // SAFETY: each symbol is the libbpf 1.x function of that signature.
        unsafe {
            Ok(Self {
                handle,
                open_file: cast(symbol("bpf_object__open_file")?),
                find_map_by_name: cast(symbol("bpf_object__find_map_by_name")?),
                set_inner_map_fd: cast(symbol("bpf_map__set_inner_map_fd")?),
                load: cast(symbol("bpf_object__load")?),
                find_program_by_name: cast(symbol("bpf_object__find_program_by_name")?),
                program_fd: cast(symbol("bpf_program__fd")?),
                find_map_fd_by_name: cast(symbol("bpf_object__find_map_fd_by_name")?),
                map_create: cast(symbol("bpf_map_create")?),
                map_update: cast(symbol("bpf_map_update_elem")?),
                close: cast(symbol("bpf_object__close")?),
                set_print: cast(symbol("libbpf_set_print")?),
            })
        }
    }

    fn update(&self, fd: c_int, key: &[u8], value: &[u8], what: &str) -> anyhow::Result<()> {
        // SAFETY: the buffers are the map's key and value sizes (the kernel checks).
        let rc = unsafe { (self.map_update)(fd, key.as_ptr().cast(), value.as_ptr().cast(), 0) };
        if rc != 0 {
            bail!("updating {what}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Libbpf {
    fn drop(&mut self) {
        // SAFETY: the handle from dlopen, closed once.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// Katran's balancer, loaded and set up.
pub struct Katran {
    lib: Libbpf,
    object: *mut c_void,
    program: RawFd,
    lru: OwnedFd,
}

impl Katran {
    /// Load Katran's object at `path` and fill its maps as `katran_bench.c` does.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let lib = Libbpf::open()?;
        // SAFETY: silence libbpf's own printing (a null callback).
        unsafe { (lib.set_print)(std::ptr::null()) };
        let path_c = CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: a NUL-terminated path and no options.
        let object = unsafe { (lib.open_file)(path_c.as_ptr(), std::ptr::null()) };
        if object.is_null() {
            bail!(
                "libbpf could not open {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        let mut katran = Self {
            program: -1,
            lru: create_lru(&lib)?,
            lib,
            object,
        };
        katran.set_up()?;
        Ok(katran)
    }

    fn map_fd(&self, name: &str) -> anyhow::Result<c_int> {
        let name_c = CString::new(name)?;
        // SAFETY: a loaded object and a NUL-terminated name.
        let fd = unsafe { (self.lib.find_map_fd_by_name)(self.object, name_c.as_ptr()) };
        if fd < 0 {
            bail!("Katran's object has no map {name}");
        }
        Ok(fd)
    }

    fn set_up(&mut self) -> anyhow::Result<()> {
        let lib = &self.lib;
        // SAFETY: the object is open, not loaded; names are NUL-terminated.
        let outer = unsafe { (lib.find_map_by_name)(self.object, c"lru_mapping".as_ptr()) };
        if outer.is_null() {
            bail!("Katran's object has no lru_mapping");
        }
        // SAFETY: as above; the LRU's fd is valid.
        if unsafe { (lib.set_inner_map_fd)(outer, self.lru.as_raw_fd()) } != 0 {
            bail!("setting lru_mapping's inner map");
        }
        // SAFETY: loading the opened object.
        if unsafe { (lib.load)(self.object) } != 0 {
            bail!(
                "libbpf could not load Katran's object: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the loaded object; the program's name is NUL-terminated.
        let program =
            unsafe { (lib.find_program_by_name)(self.object, c"balancer_ingress".as_ptr()) };
        if program.is_null() {
            bail!("Katran's object has no balancer_ingress");
        }
        // SAFETY: a program of the loaded object.
        self.program = unsafe { (lib.program_fd)(program) };
        let zero = 0u32.to_ne_bytes();
        let lru = (self.lru.as_raw_fd() as u32).to_ne_bytes();
        lib.update(self.map_fd("lru_mapping")?, &zero, &lru, "lru_mapping")?;
        let mut mac = [0u8; 8];
        mac[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x99]);
        lib.update(self.map_fd("ctl_array")?, &zero, &mac, "ctl_array")?;
        // struct vip_definition { u32 vip[4]; u16 port; u8 proto; u8 pad; } (network
        // order), struct vip_meta { u32 flags; u32 vip_num; }.
        let mut vip = [0u8; 20];
        vip[..4].copy_from_slice(&VIP);
        vip[16..18].copy_from_slice(&80u16.to_be_bytes());
        vip[18] = 6;
        lib.update(self.map_fd("vip_map")?, &vip, &[0u8; 8], "vip_map")?;
        // struct real_definition { u32 dst[4]; u8 flags; u8 pad[3]; }: 10.0.0.N.
        let reals = self.map_fd("reals")?;
        for real in 1..=REALS {
            let mut definition = [0u8; 20];
            definition[..4].copy_from_slice(&(0x0a00_0000u32 + real).to_be_bytes());
            lib.update(reals, &real.to_ne_bytes(), &definition, "reals")?;
        }
        let rings = self.map_fd("ch_rings")?;
        for slot in 0..RING_SIZE {
            let real = 1 + slot % REALS;
            lib.update(rings, &slot.to_ne_bytes(), &real.to_ne_bytes(), "ch_rings")?;
        }
        Ok(())
    }

    /// Katran's program.
    pub fn program(&self) -> RawFd {
        self.program
    }
}

impl Drop for Katran {
    fn drop(&mut self) {
        // SAFETY: the object from open_file, closed once (its programs and maps go too).
        unsafe { (self.lib.close)(self.object) };
    }
}

/// The LRU Katran's userspace puts in `lru_mapping[0]`.
fn create_lru(lib: &Libbpf) -> anyhow::Result<OwnedFd> {
    // SAFETY: a map of plain sizes, no options.
    let fd = unsafe {
        (lib.map_create)(
            BPF_MAP_TYPE_LRU_HASH,
            c"katran_lru".as_ptr(),
            FLOW_KEY_SIZE,
            REAL_POS_SIZE,
            LRU_SIZE,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        bail!("creating Katran's LRU: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new fd this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The trivial program both are measured against: `r0 = XDP_PASS; exit`.
pub fn xdp_pass_program() -> anyhow::Result<OwnedFd> {
    // mov r0, 2 (0xb7, imm 2); exit (0x95).
    let program: [u64; 2] = [0x0000_0002_0000_00b7, 0x95];
    let license = c"GPL";
    // union bpf_attr, the `prog load` member: prog_type, insn_cnt, insns, license.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(BPF_PROG_TYPE_XDP as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(program.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(program.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: the attr points at the instructions and licence, which outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("loading XDP_PASS");
    }
    // SAFETY: a new fd this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// One BPF_PROG_TEST_RUN of `program` on `frame` (repeat 1; `ctx`: an `xdp_md`, its
/// data_end set here, or none):
/// its return value and the kernel's time in ns.
pub fn test_run(program: RawFd, frame: &[u8], ctx: Option<&[u8]>) -> anyhow::Result<(u32, u32)> {
    let mut out = [0u8; 512];
    // union bpf_attr, the `test` member: prog_fd, retval, data_size_in, data_size_out,
    // data_in, data_out, repeat, duration, ctx_size_in, ctx_size_out, ctx_in, ctx_out.
    let mut attr = [0u8; 80];
    let put32 =
        |attr: &mut [u8; 80], at: usize, v: u32| attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |attr: &mut [u8; 80], at: usize, v: u64| attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, program as u32);
    put32(&mut attr, 8, frame.len() as u32);
    put32(&mut attr, 12, out.len() as u32);
    put64(&mut attr, 16, frame.as_ptr() as u64);
    put64(&mut attr, 24, out.as_mut_ptr() as u64);
    put32(&mut attr, 32, 1);
    // The context's data_end is the frame's length.
    let mut ctx = ctx.map(<[u8]>::to_vec);
    if let Some(ctx) = ctx.as_mut() {
        if ctx.len() >= 8 {
            ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        }
        put32(&mut attr, 40, ctx.len() as u32);
        put64(&mut attr, 48, ctx.as_ptr() as u64);
    }
    // SAFETY: the attr points at buffers that outlive the call, with their sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_PROG_TEST_RUN");
    }
    let read32 = |at: usize| u32::from_ne_bytes(attr[at..at + 4].try_into().expect("4 bytes"));
    Ok((read32(4), read32(36)))
}

/// The mean kernel time of `calls` test runs of `program`, each on the frame `frame(i,
/// buffer)` writes into the buffer; every run must return `action`.
pub fn mean_ns(
    program: RawFd,
    calls: usize,
    ctx: Option<&[u8]>,
    action: u32,
    mut frame: impl FnMut(usize, &mut Vec<u8>),
) -> anyhow::Result<f64> {
    let mut total = 0u64;
    let mut buffer = Vec::new();
    for i in 0..calls {
        frame(i, &mut buffer);
        let (returned, ns) = test_run(program, &buffer, ctx)?;
        if returned != action {
            bail!("call {i} returned {returned}, not {action}");
        }
        total += u64::from(ns);
    }
    Ok(total as f64 / calls.max(1) as f64)
}

/// A loaded program's size, as the kernel reports it (`bpftool prog show`).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ProgramSize {
    /// Instructions after the verifier's rewrites.
    pub xlated_insns: u32,
    /// Bytes of machine code.
    pub jited_bytes: u32,
    /// Instructions the verifier processed to accept it (its complexity).
    pub verified_insns: u32,
}

/// The size of `program` (BPF_OBJ_GET_INFO_BY_FD).
pub fn program_size(program: RawFd) -> anyhow::Result<ProgramSize> {
    // struct bpf_prog_info is 232 bytes (kernel 6.x); the kernel fills what it knows.
    let mut info = [0u8; 232];
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(program as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: the attr points at `info`, which outlives the call, with its length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_OBJ_GET_INFO_BY_FD");
    }
    let read32 = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    Ok(ProgramSize {
        jited_bytes: read32(16),
        xlated_insns: read32(20) / 8,
        verified_insns: read32(216),
    })
}
