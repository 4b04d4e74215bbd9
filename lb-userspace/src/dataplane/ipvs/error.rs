//! What can go wrong talking to IPVS: the kernel refusing a request (with the operation
//! and the service named, and the errno as `strerror` text with its symbolic name), a reply
//! that does not decode (with the reason), the socket itself, and IPVS not being there.

use std::io;

/// Why bytes from the kernel (or a fixture) do not decode. Decoding never panics: every
/// short, overlong or malformed piece ends here with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} truncated: {needed} bytes needed, {available} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("netlink message declares {declared} bytes but {available} are left")]
    MessageLength { declared: usize, available: usize },
    #[error("attribute type {kind} declares {declared} bytes but {available} are left")]
    AttributeLength {
        kind: u16,
        declared: usize,
        available: usize,
    },
    #[error("{attribute}: {actual} bytes of payload where {expected} were expected")]
    PayloadSize {
        attribute: &'static str,
        expected: &'static str,
        actual: usize,
    },
    #[error("{attribute}: {reason}")]
    BadString {
        attribute: &'static str,
        reason: &'static str,
    },
    #[error("{attribute} missing from {within}")]
    Missing {
        attribute: &'static str,
        within: &'static str,
    },
    #[error("{attribute}: unknown value {value}")]
    UnknownValue { attribute: &'static str, value: u64 },
    #[error("generic netlink command {actual} where {expected} was expected")]
    UnexpectedCommand { expected: u8, actual: u8 },
    #[error("netlink message type {kind}: {reason}")]
    UnexpectedMessage { kind: u16, reason: &'static str },
}

/// An IPVS operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    #[error(
        "the kernel has no IPVS (generic netlink family \"IPVS\" not found; is the ip_vs module \
         loaded?)"
    )]
    NotRegistered,
    #[error("generic netlink socket: {action}: {source}")]
    Socket {
        action: &'static str,
        source: io::Error,
    },
    #[error("{operation}: {source}")]
    Io {
        operation: String,
        source: io::Error,
    },
    #[error("{operation}: {}", errno_text(*errno))]
    Kernel { operation: String, errno: i32 },
    #[error(
        "{operation}: the kernel has no IPVS scheduler {scheduler} (try `modprobe \
         ip_vs_{scheduler}`)"
    )]
    MissingScheduler {
        operation: String,
        scheduler: String,
    },
    #[error("{operation}: bad reply from the kernel: {source}")]
    Decode {
        operation: String,
        source: DecodeError,
    },
    #[error("{path} line {line}: {reason}")]
    ConnTable {
        path: &'static str,
        line: usize,
        reason: String,
    },
    #[error("reading {path}: {source}")]
    ReadConnTable {
        path: &'static str,
        source: io::Error,
    },
}

impl IpvsError {
    /// The errno the kernel answered with, if that is what failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// `strerror` text and symbolic name of the errnos IPVS and generic netlink answer with.
const ERRNOS: [(i32, &str, &str); 22] = [
    (libc::EPERM, "EPERM", "Operation not permitted"),
    (libc::ENOENT, "ENOENT", "No such file or directory"),
    (libc::ESRCH, "ESRCH", "No such process"),
    (libc::EINTR, "EINTR", "Interrupted system call"),
    (libc::EIO, "EIO", "Input/output error"),
    (libc::EAGAIN, "EAGAIN", "Resource temporarily unavailable"),
    (libc::ENOMEM, "ENOMEM", "Cannot allocate memory"),
    (libc::EACCES, "EACCES", "Permission denied"),
    (libc::EFAULT, "EFAULT", "Bad address"),
    (libc::EBUSY, "EBUSY", "Device or resource busy"),
    (libc::EEXIST, "EEXIST", "File exists"),
    (libc::ENODEV, "ENODEV", "No such device"),
    (libc::EINVAL, "EINVAL", "Invalid argument"),
    (libc::ERANGE, "ERANGE", "Numerical result out of range"),
    (libc::EMSGSIZE, "EMSGSIZE", "Message too long"),
    (libc::ENOPROTOOPT, "ENOPROTOOPT", "Protocol not available"),
    (
        libc::EPROTONOSUPPORT,
        "EPROTONOSUPPORT",
        "Protocol not supported",
    ),
    (libc::EOPNOTSUPP, "EOPNOTSUPP", "Operation not supported"),
    (
        libc::EAFNOSUPPORT,
        "EAFNOSUPPORT",
        "Address family not supported by protocol",
    ),
    (libc::ENOBUFS, "ENOBUFS", "No buffer space available"),
    (libc::ETIMEDOUT, "ETIMEDOUT", "Connection timed out"),
    // The kernel's internal ENOTSUPP leaks out of some netlink paths.
    (524, "ENOTSUPP", "Operation not supported"),
];

/// `File exists (EEXIST)`; EPERM says what is missing, ESRCH what IPVS means by it.
pub fn errno_text(errno: i32) -> String {
    let text = match ERRNOS.iter().find(|(n, _, _)| *n == errno) {
        Some((_, name, text)) => format!("{text} ({name})"),
        None => format!("{} (errno {errno})", io::Error::from_raw_os_error(errno)),
    };
    match errno {
        libc::EPERM => format!("{text}: IPVS needs CAP_NET_ADMIN"),
        libc::ESRCH => format!("{text}: IPVS has no such service"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_name_the_operation_and_the_errno() {
        let error = IpvsError::Kernel {
            operation: "adding service TCP 10.0.0.1:80".into(),
            errno: libc::EEXIST,
        };
        assert_eq!(
            error.to_string(),
            "adding service TCP 10.0.0.1:80: File exists (EEXIST)"
        );
        assert_eq!(error.errno(), Some(libc::EEXIST));
        assert!(errno_text(libc::EPERM).contains("CAP_NET_ADMIN"));
        assert!(errno_text(4000).contains("errno 4000"));
    }

    #[test]
    fn a_missing_scheduler_says_which_module() {
        let error = IpvsError::MissingScheduler {
            operation: "adding service TCP 10.0.0.1:80".into(),
            scheduler: "mh".into(),
        };
        assert!(error.to_string().ends_with("(try `modprobe ip_vs_mh`)"));
    }
}
