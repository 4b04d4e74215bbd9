#!/usr/bin/env python3
"""Turn the output of capture.sh (MARK lines and a base64 pcap from an nlmon device) into
a fixture file: the generic netlink messages of each step, one message per line.

    python3 extract.py ipvsadm capture-output.txt > ipvsadm.txt
    python3 extract.py ours capture-output.txt > ours.txt
    python3 extract.py ipvsadm-fwmark capture-output.txt > ipvsadm-fwmark.txt
    python3 extract.py ours-fwmark capture-output.txt > ours-fwmark.txt

Run once on the host, by hand; the tests only read the .txt files. The pcap's link type is
LINKTYPE_NETLINK (253; nlmon): a 16-byte header like Linux cooked v1 (packet type, ARPHRD,
address length, address, then the netlink protocol, big-endian) before each datagram.
Linux cooked v2 (276) is read too. Every packet in nlmon's capture is "outgoing", so the
direction comes from the message: requests carry NLM_F_REQUEST, the kernel's messages never.

What is kept, per step (the span from one MARK to the next):
- generic netlink only (protocol 16);
- nlctrl's CTRL_CMD_GETFAMILY exchanges (libipvs resolves the family on each of its
  sockets, several times per ipvsadm run) and IPVS_CMD_GET_INFO exchanges (ipvs_init sends
  one per run) only in the step `version`, and there only the first of each;
- in `ours`, the reads `IpvsDataplane::apply` makes before it changes anything
  (GET_CONFIG, the GET_SERVICE and GET_DEST dumps) whole only in the steps `list` and
  `get-timeouts`, their requests only in `edit-service`; elsewhere a comment counts them
  (the last step's is the test's check that no service is left);
- the step `reference` (ipvsadm's text listings) not at all.

The kernel answers a request before the next one is sent (ipvsadm and lbd send one
request at a time and read its answer), so each reply belongs to the request before it.
"""

import base64
import struct
import sys

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
NLM_F_REQUEST = 0x01
NLMSG_ERROR, NLMSG_DONE = 2, 3

IPVS_CMDS = {
    1: "NEW_SERVICE", 2: "SET_SERVICE", 3: "DEL_SERVICE", 4: "GET_SERVICE",
    5: "NEW_DEST", 6: "SET_DEST", 7: "DEL_DEST", 8: "GET_DEST",
    9: "NEW_DAEMON", 10: "DEL_DAEMON", 11: "GET_DAEMON",
    12: "SET_CONFIG", 13: "GET_CONFIG", 14: "SET_INFO", 15: "GET_INFO",
    16: "ZERO", 17: "FLUSH",
}
CTRL_CMDS = {1: "CTRL_CMD_NEWFAMILY", 3: "CTRL_CMD_GETFAMILY"}
ERRNOS = {2: "ENOENT", 3: "ESRCH", 17: "EEXIST", 22: "EINVAL"}
# Reads apply() makes before changing anything.
READS = {4, 8, 13}
KEEP_READS_IN = {"list", "get-timeouts", "fwmark-list"}
# The step whose reads' requests (not their replies) are kept in `ours`.
SHOW_READS_IN = "edit-service"


def read_output(path):
    """The MARK lines (time, label, what) and the pcap's bytes."""
    marks, b64, in_pcap = [], [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line == "PCAP-BEGIN":
                in_pcap = True
            elif line == "PCAP-END":
                in_pcap = False
            elif in_pcap:
                b64.append(line)
            elif "MARK " in line:
                # The test harness may print its "test ... " before the first mark.
                _, when, label, *what = line[line.index("MARK "):].split(" ")
                marks.append((float(when), label, " ".join(what)))
    return marks, base64.b64decode("".join(b64))


def packets(pcap):
    """(time, netlink protocol, datagram) of each packet."""
    magic = struct.unpack("<I", pcap[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nanos = struct.unpack(endian + "I", pcap[:4])[0] == 0xA1B23C4D
    linktype = struct.unpack(endian + "I", pcap[20:24])[0]
    offset = 24
    while offset + 16 <= len(pcap):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", pcap[offset:offset + 16])
        offset += 16
        data = pcap[offset:offset + incl]
        offset += incl
        when = sec + frac / (1e9 if nanos else 1e6)
        if linktype in (253, 113):
            protocol = struct.unpack(">H", data[14:16])[0]
            datagram = data[16:]
        elif linktype == 276:
            protocol = struct.unpack(">H", data[0:2])[0]
            datagram = data[20:]
        else:
            sys.exit(f"link type {linktype} is not nlmon's")
        yield when, protocol, datagram


def messages(datagram):
    """The netlink messages of a datagram."""
    offset = 0
    while offset + 16 <= len(datagram):
        length = struct.unpack("<I", datagram[offset:offset + 4])[0]
        if length < 16:
            sys.exit("malformed netlink message")
        yield datagram[offset:offset + length]
        offset += (length + 3) & ~3


def header(message):
    length, kind, flags, seq, pid = struct.unpack("<IHHII", message[:16])
    return kind, flags


def describe(message, ipvs_family):
    """A comment for one message."""
    kind, flags = header(message)
    if flags & NLM_F_REQUEST:
        direction = "to the kernel"
    else:
        direction = "from the kernel"
    if kind == NLMSG_ERROR:
        code = struct.unpack("<i", message[16:20])[0]
        if code == 0:
            return f"{direction}: ACK"
        name = ERRNOS.get(-code, "")
        return f"{direction}: error {code} {name}".rstrip()
    if kind == NLMSG_DONE:
        return f"{direction}: DONE (end of the dump)"
    command = message[16]
    if kind == GENL_ID_CTRL:
        name = CTRL_CMDS.get(command, f"nlctrl command {command}")
    elif kind == ipvs_family:
        name = "IPVS_CMD_" + IPVS_CMDS.get(command, str(command))
    else:
        name = f"family {kind:#x} command {command}"
    flag_names = [n for bit, n in ((1, "REQUEST"), (2, "MULTI"), (4, "ACK"), (0x300, "DUMP"))
                  if flags & bit == bit]
    return f"{direction}: {name} ({'|'.join(flag_names) or 'no flags'})"


def exchanges(items):
    """Group (time, message) items into [request, replies...] lists (replies before the
    first request, if any, form a group of their own)."""
    groups = []
    for when, message in items:
        _, flags = header(message)
        if flags & NLM_F_REQUEST or not groups:
            groups.append([])
        groups[-1].append((when, message))
    return groups


def command_of(message):
    return message[16] if len(message) > 16 else None


def main():
    mode, path = sys.argv[1], sys.argv[2]
    marks, pcap = read_output(path)
    found = [(when, message) for when, protocol, datagram in packets(pcap)
             if protocol == NETLINK_GENERIC for message in messages(datagram)]
    ipvs_family = next(
        (header(m)[0] for _, m in found if header(m)[0] > GENL_ID_CTRL and header(m)[1] & 1),
        None,
    )
    out = sys.stdout
    source = "ipvsadm 1.31 (libnl 3.7)" if mode.startswith("ipvsadm") else (
        "IpvsDataplane (the ignored tests in fixtures/vm_capture.rs)")
    out.write(
        f"# IPVS generic netlink messages of {source}, captured with nlmon and tcpdump in\n"
        "# `cargo xtask vm` (Debian's 6.1 kernel, x86-64: host byte order is little-endian) by\n"
        f"# captured/capture.sh {mode}; extracted by captured/extract.py. `@ label` starts a\n"
        "# step, `> hex` is a message to the kernel, `< hex` one from it, whole (nlmsghdr\n"
        f"# included; the IPVS family id was {ipvs_family:#x}).\n"
    )
    seen_getfamily = seen_getinfo = False
    for index, (start, label, what) in enumerate(marks):
        end = marks[index + 1][0] if index + 1 < len(marks) else float("inf")
        if label in ("reference", "end"):
            continue
        items = [(w, m) for w, m in found if start <= w < end]
        out.write(f"\n@ {label}\n# {what}\n")
        reads = []
        for group in exchanges(items):
            request = group[0][1]
            kind, flags = header(request)
            command = command_of(request)
            is_request = flags & NLM_F_REQUEST
            if is_request and kind == GENL_ID_CTRL:
                if label != "version" or seen_getfamily:
                    continue
                seen_getfamily = True
            if is_request and kind == ipvs_family and command == 15:
                if label != "version" or seen_getinfo:
                    continue
                seen_getinfo = True
            keep = group
            if (mode.startswith("ours") and is_request and kind == ipvs_family
                    and command in READS and label not in KEEP_READS_IN):
                if label == SHOW_READS_IN:
                    out.write(f"# {describe(request, ipvs_family)}; its {len(group) - 1} "
                              "replies are left out\n")
                    out.write(f"> {request.hex()}\n")
                else:
                    reads.append(IPVS_CMDS[command])
                continue
            for _, message in keep:
                mark = ">" if header(message)[1] & NLM_F_REQUEST else "<"
                out.write(f"# {describe(message, ipvs_family)}\n{mark} {message.hex()}\n")
        if reads:
            why = ("the test's check that no service is left" if label == "stop"
                   else f"apply's reads before its changes, as in `{SHOW_READS_IN}`")
            out.write(f"# left out: {len(reads)} read request(s) ({', '.join(reads)}) and"
                      f" their replies ({why})\n")


if __name__ == "__main__":
    main()
