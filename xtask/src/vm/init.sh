#!/bin/busybox sh
# /init of the `cargo xtask vm` guest (see xtask/src/vm.rs), run by busybox's sh.
#
# Protocol with the host: lines starting with "lb-vm:" on the console (ttyS0); the
# command's stdout on ttyS1 and its stderr on ttyS2; the share "results" brings the job
# (`job`, a script for the host's /bin/sh) in and takes its exit status (`status`) out.
# /etc/lb-vm.conf sets MODULES_DIR, the host's path of the kernel's /lib/modules.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
. /etc/lb-vm.conf

say() { echo "lb-vm: $*"; }
die() {
    say "FAILED: $*"
    poweroff -f
}

# Modules in dependency order (written by the host from modules.dep).
while read -r module; do
    insmod "/modules/$module" || say "insmod $module failed"
done </modules/order

ninep="trans=virtio,version=9p2000.L,msize=262144"
mkdir -p /host /results /upper /newroot
mount -t 9p -o "$ninep,ro,cache=loose" host /host || die "cannot mount the host's root (9p)"
mount -t 9p -o "$ninep" results /results || die "cannot mount the results share (9p)"
# The host's root, writable through a tmpfs upper layer.
mount -t tmpfs -o mode=0755 upper /upper
mkdir /upper/data /upper/work
mount -t overlay -o lowerdir=/host,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
    die "cannot mount the overlay on the host's root"

# Modules asked for later: the kernel runs /sbin/modprobe in this root (pid 1 does not
# chroot), and the host's root has no modules of this kernel.
mount --bind "/host$MODULES_DIR" /lib/modules || die "cannot bind the kernel's modules"
echo /bin/modprobe >/proc/sys/kernel/modprobe

cd /newroot || die "no /newroot"
mount -t proc proc proc
mount -t sysfs sysfs sys
mount -t devtmpfs devtmpfs dev
mkdir -p dev/pts dev/shm lib/modules
mount -t devpts -o newinstance,ptmxmode=0666 devpts dev/pts
mount -t tmpfs -o mode=1777 tmpfs dev/shm
ln -s /proc/self/fd dev/fd
ln -s /proc/self/fd/0 dev/stdin
ln -s /proc/self/fd/1 dev/stdout
ln -s /proc/self/fd/2 dev/stderr
mount -t bpf bpf sys/fs/bpf || die "cannot mount the bpf filesystem"
mount -t tmpfs -o mode=0755 tmpfs run
# /tmp stays the host's, through the overlay: a clone under /tmp (CI's) must be there.
mount --bind /lib/modules lib/modules
# The host may have no modprobe (kmod) of its own: busybox's, in the guest only.
if [ ! -e usr/sbin/modprobe ] && [ ! -e sbin/modprobe ]; then
    mkdir -p usr/local/sbin
    cp /bin/busybox usr/local/sbin/modprobe
fi
hostname lb-vm
ip link set lo up
cp /results/job run/lb-vm-job || die "no job in the results share"

stty -F /dev/ttyS1 raw -echo
stty -F /dev/ttyS2 raw -echo
say started
chroot /newroot /bin/sh /run/lb-vm-job </dev/null >/dev/ttyS1 2>/dev/ttyS2
status=$?
# Setting the mode waits until the ports have sent what is queued.
stty -F /dev/ttyS1 raw
stty -F /dev/ttyS2 raw
echo "$status" >/results/status
umount /results
say finished "$status"
poweroff -f
