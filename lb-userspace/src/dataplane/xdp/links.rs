//! Attachments that outlive lbd. The balancer (and the decap program) is attached through
//! a BPF link pinned under the pin directory (`links/IFACE`), so that the program stays
//! attached when lbd crashes or is killed: forwarding goes on with the maps as they are.
//! A new lbd adopts the pinned link and swaps its own program into it with one
//! `bpf_link_update`: no packet meets a moment without a program, whether the new program
//! is the same code or an upgrade's. A graceful stop unpins and closes the link, which
//! detaches the program, unless lbd is asked to leave the data plane running
//! (keepalived's `--dont-release-ipvs`).
//!
//! Where the kernel has no XDP links (before 5.9, aya attaches over netlink), the
//! attachment cannot be pinned and goes with the process, with a warning.

use std::path::{Path, PathBuf};

use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use super::{AttachMode, error_chain};
use crate::dataplane::DataplaneError;

/// The directory of the pinned links under pin directory `pins`.
pub fn links_dir(pins: &Path) -> PathBuf {
    pins.join("links")
}

/// How a program came to be attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// Whether native (driver) mode is in use; `None` for an adopted link (it keeps the
    /// mode it was attached in).
    pub native: Option<bool>,
    /// With `AttachMode::Auto`, why native mode failed (generic mode is in use).
    pub fallback: Option<String>,
    /// The link was pinned by an earlier lbd and now runs this lbd's program.
    pub adopted: bool,
}

/// A program's attachment to one interface.
pub struct Attachment {
    pub interface: String,
    pub attached: Attached,
    link: Held,
}

enum Held {
    /// Pinned at this path.
    Pinned(PinnedLink),
    /// Not pinnable (netlink attachment) or no pin directory: owned by this process.
    Owned(XdpLink),
}

impl Attachment {
    /// Detach: the program stops handling the interface's packets.
    pub fn detach(self) -> Result<(), DataplaneError> {
        match self.link {
            Held::Pinned(pinned) => {
                let path = pinned_path(&self.interface);
                // Closing the last descriptor of an unpinned link detaches it.
                drop(pinned.unpin().map_err(|e| DataplaneError::Pins {
                    path,
                    reason: format!("cannot unpin the link: {e}"),
                })?);
            }
            Held::Owned(link) => drop(link),
        }
        Ok(())
    }

    /// Let go of the attachment, leaving the program attached (pinned links only; an
    /// owned attachment goes with the process).
    pub fn leave(self) {
        match self.link {
            // Closes this process's descriptor; the pin keeps the link.
            Held::Pinned(pinned) => drop(pinned),
            Held::Owned(link) => std::mem::forget(link),
        }
    }
}

fn pinned_path(interface: &str) -> String {
    format!("links/{interface}")
}

/// Attach `program` (named `name`) to `interface`: adopt the link pinned for it under
/// `links` (an earlier lbd's), swapping `program` in, else attach anew in `mode` and pin
/// the link there. Without `links`, attach without pinning.
/// `attach` program `name` of `ebpf`, the attachment kept in `attachments` (for
/// `detach`/`leave` later).
pub fn attach_kept(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    interface: &str,
    mode: AttachMode,
    links: Option<&Path>,
    attachments: &mut Vec<Attachment>,
) -> Result<Attached, DataplaneError> {
    let program = super::program_mut(ebpf, name)?;
    let attachment = attach(program, name, interface, mode, links)?;
    let attached = attachment.attached.clone();
    attachments.push(attachment);
    Ok(attached)
}

pub fn attach(
    program: &mut Xdp,
    name: &'static str,
    interface: &str,
    mode: AttachMode,
    links: Option<&Path>,
) -> Result<Attachment, DataplaneError> {
    let pin = links.map(|dir| dir.join(interface));
    if let Some(pin) = pin.as_deref().filter(|pin| pin.exists()) {
        match adopt(program, pin) {
            Ok(pinned) => {
                return Ok(Attachment {
                    interface: interface.to_owned(),
                    attached: Attached {
                        native: None,
                        fallback: None,
                        adopted: true,
                    },
                    link: Held::Pinned(pinned),
                });
            }
            Err(reason) => {
                // A stale pin (its interface gone, say): attach anew.
                tracing::warn!(
                    "the link pinned at {} cannot be adopted ({reason}); attaching anew",
                    pin.display()
                );
                let _ = std::fs::remove_file(pin);
            }
        }
    }
    let (id, native, fallback) = attach_new(program, interface, mode)?;
    let link = program
        .take_link(id)
        .map_err(|source| DataplaneError::Program {
            program: name,
            source,
        })?;
    let link = match pin {
        None => Held::Owned(link),
        Some(pin) => {
            match FdLink::try_from(link) {
                Ok(fd_link) => {
                    if let Some(dir) = pin.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| DataplaneError::Pins {
                            path: dir.display().to_string(),
                            reason: format!("cannot create: {e}"),
                        })?;
                    }
                    Held::Pinned(fd_link.pin(&pin).map_err(|e| DataplaneError::Pins {
                        path: pin.display().to_string(),
                        reason: format!("cannot pin the link: {}", error_chain(&e)),
                    })?)
                }
                Err(e) => {
                    tracing::warn!(
                        "XDP on {interface} is attached without a BPF link ({e}): it cannot be pinned, so it detaches if lbd stops or crashes"
                    );
                    // The conversion gave the link back inside its error only for the fd
                    // kind; attach again and keep it owned.
                    let (id, _, _) = attach_new(program, interface, mode)?;
                    Held::Owned(program.take_link(id).map_err(|source| {
                        DataplaneError::Program {
                            program: name,
                            source,
                        }
                    })?)
                }
            }
        }
    };
    Ok(Attachment {
        interface: interface.to_owned(),
        attached: Attached {
            native: Some(native),
            fallback,
            adopted: false,
        },
        link,
    })
}

/// Swap `program` into the link pinned at `pin`: the pinned link, now running it.
fn adopt(program: &mut Xdp, pin: &Path) -> Result<PinnedLink, String> {
    let pinned = PinnedLink::from_pin(pin).map_err(|e| error_chain(&e))?;
    let fd_link = FdLink::from(pinned);
    let xdp_link = XdpLink::try_from(fd_link).map_err(|e| error_chain(&e))?;
    let id = program
        .attach_to_link(xdp_link)
        .map_err(|e| error_chain(&e))?;
    let link = program.take_link(id).map_err(|e| error_chain(&e))?;
    let fd_link = FdLink::try_from(link).map_err(|e| error_chain(&e))?;
    // Opening the pin again gives a handle that knows its path (the pin never left).
    drop(fd_link);
    PinnedLink::from_pin(pin).map_err(|e| error_chain(&e))
}

/// Attach `program` to `interface` in `mode`: the link, whether native mode is in use,
/// and with `AttachMode::Auto` the native error when it fell back to generic mode.
fn attach_new(
    program: &mut Xdp,
    interface: &str,
    mode: AttachMode,
) -> Result<(aya::programs::xdp::XdpLinkId, bool, Option<String>), DataplaneError> {
    let attach = |program: &mut Xdp, mode| {
        program
            .attach(interface, mode)
            .map_err(|e| DataplaneError::Attach {
                interface: interface.to_owned(),
                reason: error_chain(&e),
            })
    };
    Ok(match mode {
        AttachMode::Native => (attach(program, XdpMode::Driver)?, true, None),
        AttachMode::Generic => (attach(program, XdpMode::Skb)?, false, None),
        AttachMode::Auto => match attach(program, XdpMode::Driver) {
            Ok(link) => (link, true, None),
            Err(native_error) => (
                attach(program, XdpMode::Skb)?,
                false,
                Some(native_error.to_string()),
            ),
        },
    })
}

/// Remove the links pinned under `links` for interfaces other than `keep` (an earlier
/// lbd attached there, this one does not): their programs detach. The interfaces.
pub fn detach_others(links: &Path, keep: &[String]) -> Result<Vec<String>, DataplaneError> {
    let entries = match std::fs::read_dir(links) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(DataplaneError::Pins {
                path: links.display().to_string(),
                reason: format!("cannot list: {e}"),
            });
        }
    };
    let mut detached = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().is_ok_and(|kind| kind.is_file());
        if !is_link || keep.contains(&name) {
            continue;
        }
        std::fs::remove_file(entry.path()).map_err(|e| DataplaneError::Pins {
            path: entry.path().display().to_string(),
            reason: format!("cannot unpin: {e}"),
        })?;
        detached.push(name);
    }
    detached.sort();
    Ok(detached)
}
