#!/usr/bin/env python3
# Boot a Linux kernel under QEMU (TCG) with an initramfs whose /init spins in user mode, stop the
# CPU, and capture QEMU's own `info registers`, `info tlb`, `info mem` and an ELF
# `dump-guest-memory` — ground truth for `pvmmu dump` (see test/fixtures/*/README.md).
#
#   capture-qemu-ground-truth.py OUTDIR CPU KERNEL INITRD
#   e.g. capture-qemu-ground-truth.py /tmp/gt/la57 qemu64,+la57 vmlinuz initrd.gz
# Needs qemu-system-x86 (Debian package). Everything stays on this machine.
import socket, subprocess, sys, time, os, re
out, cpu, kernel, initrd = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
sock = os.path.join(out, "monitor.sock")
if os.path.exists(sock): os.unlink(sock)
mem_mb = 256
qemu = subprocess.Popen(["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", cpu, "-m", str(mem_mb),
    "-kernel", kernel, "-initrd", initrd,
    "-append", "console=ttyS0 panic=-1 nokaslr", "-display", "none", "-serial", f"file:{out}/serial.log",
    "-monitor", f"unix:{sock},server,nowait", "-no-reboot", "-net", "none"])
deadline = time.time() + 240
while time.time() < deadline:
    time.sleep(2)
    try:
        if "init: spinning" in open(f"{out}/serial.log", errors="replace").read(): break
    except FileNotFoundError: pass
else:
    qemu.kill(); sys.exit("kernel did not reach init")
time.sleep(1)
s = socket.socket(socket.AF_UNIX); s.connect(sock); s.settimeout(120)
def cmd(c):
    s.sendall((c + "\n").encode())
    buf = b""
    while True:
        chunk = s.recv(1 << 20)
        buf += chunk
        if buf.rstrip().endswith(b"(qemu)"): break
    text = buf.decode(errors="replace").replace("\r", "")
    # strip the echoed command and the prompts
    lines = text.split("\n")
    body = [l for l in lines if not l.startswith("(qemu)") and not l.startswith("QEMU ") and l.strip() != c]
    return "\n".join(body).strip("\n") + "\n"
time.sleep(0.5); s.recv(65536)  # banner
cmd("stop")
regs = cmd("info registers")
open(f"{out}/registers.txt", "w").write(regs)
open(f"{out}/info-tlb.txt", "w").write(cmd("info tlb"))
open(f"{out}/info-mem.txt", "w").write(cmd("info mem"))
cmd(f"dump-guest-memory {out}/mem.elf")
cmd("quit")
qemu.wait(timeout=30)
print(re.search(r"CR3=([0-9a-f]+)", regs).group(0), re.search(r"CR4=([0-9a-f]+)", regs).group(0))
