// AF_PACKET I/O for FromDevice and ToDevice: a TPACKET_V2 receive ring whose frames are copied
// straight into packet slots of the shared WebAssembly memory, and sendmmsg of frames that stay in
// that memory. The ring is TPACKET_V3 by default: frames packed into blocks, the fastest to drain; a
// block reaches user space only when full or when its retire timer (1 ms) fires, which at low rates
// adds about a millisecond per hop. TPACKET_V2 (version: 2) makes each frame readable, and wakes
// poll(), as soon as the kernel has written it: the lowest latency, at a cost per frame. The per-packet work is here, in C; JavaScript calls once per burst. Every copy into
// the memory is checked against the slot's room and the memory's length. It also advises the kernel to back the
// shared memory with transparent huge pages (adviseHugePages, used by engine/memory.ts through huge-pages.ts).

#include <napi.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace {

/** What receive() writes per frame (24 bytes; elements/from-device/process.ts reads it). */
struct RxDesc {
  uint32_t slot;    // packet slot the frame went to; 0 when it was dropped
  uint32_t length;  // bytes copied
  uint32_t wire;    // bytes the frame had
  uint32_t status;  // RX_* below
  uint64_t timestamp;
};
constexpr uint32_t RX_OK = 0, RX_NO_SLOT = 1, RX_OVERSIZE = 2, RX_CSUM_PARTIAL = 4;

struct Socket {
  int fd = -1;
  std::string ifname;
  uint8_t* ring = nullptr;
  size_t ringBytes = 0;
  int version = TPACKET_V3;
  uint32_t unitSize = 0, unitCount = 0;  // V3: its blocks; V2: its frames
  uint32_t unit = 0;                     // the block (V3) or frame (V2) to read next
  uint32_t left = 0;                     // V3: frames of the block not read yet
  tpacket3_hdr* frame = nullptr;         // V3: the next frame of the block
  uint64_t kernelPackets = 0, kernelDrops = 0;
  unsigned ifindex = 0;
  bool down = false;                     // its link went down (ENETDOWN) and has not been seen up since
  bool wentDown = false;                 // the link went down since linkWentDown last asked
  int64_t linkLookedMs = 0;              // when a wait last looked at the link's flags (steady clock)
  int refused = 0;                       // errno of the last frame the kernel refused to send, until sendError reads it
};

std::vector<Socket*> sockets;

/** An error with a `code` (ENODEV, EMSGSIZE...) that native/afpacket.ts turns into a hint. */
Napi::Error codedError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::Value fail(Napi::Env env, const std::string& code, const std::string& message) {
  codedError(env, code, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value failErrno(Napi::Env env, const std::string& ifname, const std::string& what, int err) {
  if (err == EPERM || err == EACCES) {
    return fail(env, "EPERM", ifname + ": " + what + ": permission denied (AF_PACKET needs root or CAP_NET_RAW, and changing offloads CAP_NET_ADMIN)");
  }
  if (err == ENODEV || err == ENXIO) return fail(env, "ENODEV", ifname + ": no such device in this network namespace");
  if (err == ENETDOWN) return fail(env, "ENETDOWN", ifname + ": the interface is down");
  return fail(env, "EIO", ifname + ": " + what + ": " + strerror(err));
}

Socket* socketArg(const Napi::CallbackInfo& info) {
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  if (id >= sockets.size() || !sockets[id]) {
    Napi::Error::New(info.Env(), "afpacket: socket is closed").ThrowAsJavaScriptException();
    return nullptr;
  }
  return sockets[id];
}

/** An ioctl on an interface by name through a throwaway datagram socket; returns errno or 0. */
int ifreqIoctl(const std::string& ifname, unsigned long request, ifreq& ifr) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  memset(ifr.ifr_name, 0, IFNAMSIZ);
  strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  int r = ioctl(fd, request, &ifr);
  int err = r < 0 ? errno : 0;
  close(fd);
  return err;
}

/**
 * Checks that the interface exists, is up, and that its frames fit a slot's room: its MTU plus an Ethernet and a
 * VLAN header, or `snaplen` bytes when that is less (the rest is cut). Returns its index, or 0 after throwing; an
 * EMSGSIZE error carries `needed`, the frame room it takes.
 */
unsigned checkInterface(Napi::Env env, const std::string& ifname, uint32_t room, uint32_t snaplen = UINT32_MAX) {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ) { fail(env, "EINVAL", "'" + ifname + "' is not an interface name"); return 0; }
  unsigned index = if_nametoindex(ifname.c_str());
  if (!index) { failErrno(env, ifname, "if_nametoindex", ENODEV); return 0; }
  ifreq ifr{};
  if (int err = ifreqIoctl(ifname, SIOCGIFFLAGS, ifr)) { failErrno(env, ifname, "SIOCGIFFLAGS", err); return 0; }
  if (!(ifr.ifr_flags & IFF_UP)) { failErrno(env, ifname, "", ENETDOWN); return 0; }
  if (int err = ifreqIoctl(ifname, SIOCGIFMTU, ifr)) { failErrno(env, ifname, "SIOCGIFMTU", err); return 0; }
  uint32_t frame = uint32_t(ifr.ifr_mtu) + 18;
  uint32_t needed = frame < snaplen ? frame : snaplen;
  if (needed > room) {
    Napi::Error e = codedError(env, "EMSGSIZE", ifname + ": MTU " + std::to_string(ifr.ifr_mtu) + " plus 18 B of Ethernet and VLAN header is larger than a slot's " +
      std::to_string(room) + " B of frame room");
    e.Set("needed", Napi::Number::New(env, needed));
    e.ThrowAsJavaScriptException();
    return 0;
  }
  return index;
}

/** check(ifname, room, snaplen): throws what opening a socket on the interface would throw for it (checkInterface), without opening one. */
Napi::Value Check(const Napi::CallbackInfo& info) {
  checkInterface(info.Env(), info[0].As<Napi::String>(), info[1].As<Napi::Number>().Uint32Value(), info[2].As<Napi::Number>().Uint32Value());
  return info.Env().Undefined();
}

Socket* openSocket(Napi::Env env, const std::string& ifname, int protocol) {
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, protocol);
  if (fd < 0) { failErrno(env, ifname, "socket(AF_PACKET)", errno); return nullptr; }
  auto* s = new Socket();
  s->fd = fd;
  s->ifname = ifname;
  return s;
}

bool bindTo(Napi::Env env, Socket* s, unsigned index, int protocol) {
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = protocol;
  addr.sll_ifindex = index;
  if (bind(s->fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) { failErrno(env, s->ifname, "bind", errno); return false; }
  s->ifindex = index;
  return true;
}

uint32_t remember(Socket* s) {
  for (uint32_t i = 0; i < sockets.size(); i++) {
    if (!sockets[i]) { sockets[i] = s; return i; }
  }
  sockets.push_back(s);
  return sockets.size() - 1;
}

void release(Socket* s) {
  if (s->ring) munmap(s->ring, s->ringBytes);
  if (s->fd >= 0) close(s->fd);
  delete s;
}

/**
 * openRx(ifname, {room, snaplen?, ringBytes, version, retireMs, fanout, promiscuous}) -> socket id. A TPACKET_V3
 * (or, with version 2, V2) ring of about `ringBytes`, its frames large enough for `room` bytes of frame
 * behind the ring's own header, V3 blocks retired after `retireMs`; bound to the interface and not
 * seeing its own outgoing frames; with fanout > 0 it joins that PACKET_FANOUT group (hash mode: a flow
 * stays on one socket, and so do the fragments of a datagram).
 */
Napi::Value OpenRx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ifname = info[0].As<Napi::String>();
  Napi::Object o = info[1].As<Napi::Object>();
  auto num = [&](const char* k) { return o.Get(k).As<Napi::Number>().Uint32Value(); };
  unsigned index = checkInterface(env, ifname, num("room"), o.Get("snaplen").IsNumber() ? num("snaplen") : UINT32_MAX);
  if (!index) return env.Undefined();
  // Protocol 0: no frame until bind names the interface and ETH_P_ALL. Created with ETH_P_ALL, the socket took every
  // interface's frames into its ring while the ring was set up and mapped, to be read as this interface's.
  Socket* s = openSocket(env, ifname, 0);
  if (!s) return env.Undefined();
  auto bad = [&](const char* what) { int err = errno; release(s); return failErrno(env, ifname, what, err); };
  s->version = num("version") == 2 ? TPACKET_V2 : TPACKET_V3;
  if (setsockopt(s->fd, SOL_PACKET, PACKET_VERSION, &s->version, sizeof s->version) < 0) return bad("PACKET_VERSION");
  int one = 1;
  if (setsockopt(s->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) return bad("PACKET_IGNORE_OUTGOING");
  // The frame sits behind the ring's header and the kernel's alignment: 128 bytes cover them.
  uint32_t frameSize = 256;
  while (frameSize < num("room") + 128) frameSize <<= 1;
  uint32_t blockSize = frameSize > (64u << 10) ? frameSize : (64u << 10);
  uint32_t blocks = num("ringBytes") / blockSize > 0 ? num("ringBytes") / blockSize : 1;
  tpacket_req3 req{};  // its first four fields are tpacket_req, V2's request
  req.tp_block_size = blockSize;
  req.tp_block_nr = blocks;
  req.tp_frame_size = frameSize;
  req.tp_frame_nr = blockSize / frameSize * blocks;
  req.tp_retire_blk_tov = num("retireMs");
  socklen_t reqBytes = s->version == TPACKET_V2 ? sizeof(tpacket_req) : sizeof req;
  if (setsockopt(s->fd, SOL_PACKET, PACKET_RX_RING, &req, reqBytes) < 0) return bad("PACKET_RX_RING");
  s->unitSize = s->version == TPACKET_V2 ? frameSize : blockSize;
  s->unitCount = s->version == TPACKET_V2 ? req.tp_frame_nr : blocks;
  s->ringBytes = size_t(blockSize) * blocks;
  void* map = mmap(nullptr, s->ringBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, s->fd, 0);
  if (map == MAP_FAILED) map = mmap(nullptr, s->ringBytes, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
  if (map == MAP_FAILED) return bad("mmap");
  s->ring = static_cast<uint8_t*>(map);
  if (!o.Get("promiscuous").ToBoolean()) {
    // Out of promiscuous mode a NIC keeps other hosts' frames away, but not every interface does (a veth, a NIC that a
    // bridge or a capture made promiscuous): a filter drops what the kernel marked as another host's.
    sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, uint32_t(SKF_AD_OFF + SKF_AD_PKTTYPE)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OTHERHOST, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0),
      BPF_STMT(BPF_RET | BPF_K, UINT32_MAX),
    };
    sock_fprog filter{ sizeof code / sizeof code[0], code };
    if (setsockopt(s->fd, SOL_SOCKET, SO_ATTACH_FILTER, &filter, sizeof filter) < 0) return bad("SO_ATTACH_FILTER");
  }
  if (!bindTo(env, s, index, htons(ETH_P_ALL))) { release(s); return env.Undefined(); }
  if (uint32_t group = num("fanout")) {
    // No PACKET_FANOUT_FLAG_DEFRAG: it hands the socket a fragmented datagram reassembled, a frame larger than the
    // MTU that never was on the wire. Fragments carry no ports, so the kernel hashes them all by addresses: one socket.
    int arg = int((group & 0xffff) | (PACKET_FANOUT_HASH << 16));
    if (setsockopt(s->fd, SOL_PACKET, PACKET_FANOUT, &arg, sizeof arg) < 0) {
      if (errno != EINVAL) return bad("PACKET_FANOUT");
      // The interface is up and the mode valid: the group exists with sockets on another interface, or of another mode.
      release(s);
      return fail(env, "EFANOUT", ifname + ": fanout group " + std::to_string(group) + " is taken by sockets on another interface "
        "(or of another fanout mode): a group id names one group in the whole network namespace");
    }
  }
  if (o.Get("promiscuous").ToBoolean()) {
    packet_mreq mr{};
    mr.mr_ifindex = index;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(s->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) return bad("PACKET_MR_PROMISC");
  }
  return Napi::Number::New(env, remember(s));
}

/** openTx(ifname, room) -> socket id: a socket that receives nothing and sends whole frames. */
Napi::Value OpenTx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ifname = info[0].As<Napi::String>();
  unsigned index = checkInterface(env, ifname, info[1].As<Napi::Number>().Uint32Value());
  if (!index) return env.Undefined();
  Socket* s = openSocket(env, ifname, 0);
  if (!s) return env.Undefined();
  if (!bindTo(env, s, index, 0)) { release(s); return env.Undefined(); }
  return Napi::Number::New(env, remember(s));
}

/** A bounds check of [at, at + bytes) against the memory. */
inline bool inside(uint64_t at, uint64_t bytes, uint64_t length) {
  return at <= length && bytes <= length - at;
}

/**
 * receive(id, memory, slots, slotCount, descs, budget, dataOffset, room, snaplen) -> frames.
 * Takes up to `budget` ready frames off the ring without waiting. `slots` is a stack of `slotCount`
 * free packet-slot addresses (u32) in `memory`; each frame pops one and is copied to slot + dataOffset,
 * at most min(room, snaplen) bytes. A frame whose first `snaplen` bytes do not fit `room` (a GSO/GRO
 * aggregate) is dropped as RX_OVERSIZE rather than cut by accident; with no slot left, frames are taken off the ring and marked
 * RX_NO_SLOT, so a full pool never stalls the kernel ring. One RxDesc per frame goes to `descs`.
 */
Napi::Value Receive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Socket* s = socketArg(info);
  if (!s) return env.Undefined();
  Napi::Uint8Array memory = info[1].As<Napi::Uint8Array>();
  uint8_t* mem = memory.Data();
  uint64_t length = memory.ByteLength();
  uint32_t slots = info[2].As<Napi::Number>().Uint32Value();
  uint32_t slotCount = info[3].As<Napi::Number>().Uint32Value();
  uint32_t descs = info[4].As<Napi::Number>().Uint32Value();
  uint32_t budget = info[5].As<Napi::Number>().Uint32Value();
  uint32_t dataOffset = info[6].As<Napi::Number>().Uint32Value();
  uint32_t room = info[7].As<Napi::Number>().Uint32Value();
  uint32_t snaplen = info[8].As<Napi::Number>().Uint32Value();
  if (!inside(slots, uint64_t(slotCount) * 4, length) || !inside(descs, uint64_t(budget) * sizeof(RxDesc), length) || (slots & 3) || (descs & 7)) {
    return fail(env, "ERANGE", s->ifname + ": receive: slot stack or descriptors outside the memory");
  }
  uint32_t keep = room < snaplen ? room : snaplen;
  auto* stack = reinterpret_cast<uint32_t*>(mem + slots);
  auto* out = reinterpret_cast<RxDesc*>(mem + descs);
  uint32_t n = 0;
  uint32_t badSlot = 0;
  // One frame: its descriptor, and its bytes copied into a slot; false when that slot lies outside the memory.
  // The kernel may hand a frame's outer VLAN tag over beside it (stripped by the NIC or by veth's offload):
  // it is put back where it was, so that the frame is forwarded and matched (`vlan`) as it came.
  auto take = [&](const uint8_t* frame, uint32_t status, uint32_t len, uint32_t captured, uint32_t mac, uint64_t timestamp, uint16_t tci, uint16_t tpid) {
    RxDesc& d = out[n++];
    bool tagged = (status & TP_STATUS_VLAN_VALID) && captured >= 12;
    if (tagged) { len += 4; captured += 4; }
    d.wire = len;
    d.timestamp = timestamp;
    d.status = (status & TP_STATUS_CSUMNOTREADY) ? RX_CSUM_PARTIAL : RX_OK;
    d.slot = 0;
    d.length = 0;
    if ((len < snaplen ? len : snaplen) > room) {
      d.status |= RX_OVERSIZE;
    } else if (!slotCount) {
      d.status |= RX_NO_SLOT;
    } else {
      uint32_t slot = stack[--slotCount];
      uint32_t copy = captured < keep ? captured : keep;
      if (!inside(uint64_t(slot) + dataOffset, copy, length)) { badSlot = slot; return false; }
      uint8_t* to = mem + slot + dataOffset;
      if (tagged) {  // copy >= 16: a slot keeps at least 64 bytes, and the frame had its two addresses
        uint16_t type = (status & TP_STATUS_VLAN_TPID_VALID) ? tpid : ETH_P_8021Q;
        const uint8_t tag[4] = { uint8_t(type >> 8), uint8_t(type), uint8_t(tci >> 8), uint8_t(tci) };
        memcpy(to, frame + mac, 12);
        memcpy(to + 12, tag, 4);
        memcpy(to + 16, frame + mac + 12, copy - 16);
      } else {
        memcpy(to, frame + mac, copy);
      }
      d.slot = slot;
      d.length = copy;
    }
    return true;
  };
  auto outside = [&]() { return fail(env, "ERANGE", s->ifname + ": receive: slot " + std::to_string(badSlot) + " outside the memory"); };
  if (s->version == TPACKET_V2) {
    while (n < budget) {
      auto* f = reinterpret_cast<tpacket2_hdr*>(s->ring + size_t(s->unit) * s->unitSize);
      uint32_t status = __atomic_load_n(&f->tp_status, __ATOMIC_ACQUIRE);
      if (!(status & TP_STATUS_USER)) break;
      if (!take(reinterpret_cast<uint8_t*>(f), status, f->tp_len, f->tp_snaplen, f->tp_mac, uint64_t(f->tp_sec) * 1000000000u + f->tp_nsec,
                f->tp_vlan_tci, f->tp_vlan_tpid)) return outside();
      __atomic_store_n(&f->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
      s->unit = s->unit + 1 == s->unitCount ? 0 : s->unit + 1;
    }
    return Napi::Number::New(env, n);
  }
  while (n < budget) {
    auto* block = reinterpret_cast<tpacket_block_desc*>(s->ring + size_t(s->unit) * s->unitSize);
    if (!s->left) {
      if (!(__atomic_load_n(&block->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) break;
      s->left = block->hdr.bh1.num_pkts;
      s->frame = reinterpret_cast<tpacket3_hdr*>(reinterpret_cast<uint8_t*>(block) + block->hdr.bh1.offset_to_first_pkt);
      if (!s->left) { __atomic_store_n(&block->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE); s->unit = (s->unit + 1) % s->unitCount; continue; }
    }
    tpacket3_hdr* f = s->frame;
    if (!take(reinterpret_cast<uint8_t*>(f), f->tp_status, f->tp_len, f->tp_snaplen, f->tp_mac, uint64_t(f->tp_sec) * 1000000000u + f->tp_nsec,
              f->hv1.tp_vlan_tci, f->hv1.tp_vlan_tpid)) return outside();
    if (--s->left) {
      s->frame = reinterpret_cast<tpacket3_hdr*>(reinterpret_cast<uint8_t*>(f) + f->tp_next_offset);
    } else {
      __atomic_store_n(&block->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
      s->unit = (s->unit + 1) % s->unitCount;
    }
  }
  return Napi::Number::New(env, n);
}

/**
 * send(id, memory, descs, count) -> frames sent. `descs` holds `count` pairs of u32 (frame address,
 * length) in `memory`; the frames go out with sendmmsg straight from there. Frames the kernel refuses
 * (a full queue, a frame too long) are skipped, not retried, and their length in `descs` set to 0: the
 * caller counts count - sent as errors, and sendError says why.
 */
Napi::Value Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Socket* s = socketArg(info);
  if (!s) return env.Undefined();
  Napi::Uint8Array memory = info[1].As<Napi::Uint8Array>();
  uint8_t* mem = memory.Data();
  uint64_t length = memory.ByteLength();
  uint32_t descs = info[2].As<Napi::Number>().Uint32Value();
  uint32_t count = info[3].As<Napi::Number>().Uint32Value();
  if (!inside(descs, uint64_t(count) * 8, length) || (descs & 3)) return fail(env, "ERANGE", s->ifname + ": send: descriptors outside the memory");
  auto* d = reinterpret_cast<uint32_t*>(mem + descs);
  constexpr uint32_t CHUNK = 256;
  iovec iov[CHUNK];
  mmsghdr msgs[CHUNK];
  uint32_t sent = 0;
  for (uint32_t at = 0; at < count;) {
    uint32_t k = count - at < CHUNK ? count - at : CHUNK;
    for (uint32_t i = 0; i < k; i++) {
      uint32_t addr = d[2 * (at + i)], len = d[2 * (at + i) + 1];
      if (!inside(addr, len, length)) return fail(env, "ERANGE", s->ifname + ": send: frame outside the memory");
      iov[i] = { mem + addr, len };
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(s->fd, msgs, k, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == ENXIO || errno == ENODEV) return fail(env, "EGONE", s->ifname + ": the interface went away while in use");
      s->refused = errno;
      // The link is down: the rest are not sent, as a NIC would drop them. Otherwise the first frame was refused
      // (ENOBUFS, EMSGSIZE...): it is skipped. Refused frames' lengths become 0, so that the caller counts their bytes out.
      uint32_t skip = errno == ENETDOWN ? count - at : 1;
      for (uint32_t i = 0; i < skip; i++) d[2 * (at + i) + 1] = 0;
      at += skip;
      continue;
    }
    sent += r;
    at += r;
  }
  return Napi::Number::New(env, sent);
}

/** sendError(id) -> why the kernel last refused a frame on the socket since the last call, or undefined. */
Napi::Value SendError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Socket* s = socketArg(info);
  if (!s || !s->refused) return env.Undefined();
  int err = s->refused;
  s->refused = 0;
  std::string why = err == EMSGSIZE ? "a frame longer than the interface's MTU (EMSGSIZE)"
    : err == ENOBUFS || err == EAGAIN ? "its transmit queue was full (" + std::string(err == ENOBUFS ? "ENOBUFS" : "EAGAIN") + ")"
    : err == ENETDOWN ? "the link is down (ENETDOWN)" : strerror(err);
  return Napi::String::New(env, why);
}

/** stats(id) -> {packets, drops}: PACKET_STATISTICS since the socket opened (the kernel resets on read). */
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Socket* s = socketArg(info);
  if (!s) return env.Undefined();
  tpacket_stats_v3 st{};  // V2 fills its first two fields, tpacket_stats
  socklen_t len = s->version == TPACKET_V2 ? sizeof(tpacket_stats) : sizeof st;
  if (getsockopt(s->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
    s->kernelPackets += st.tp_packets;
    s->kernelDrops += st.tp_drops;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("packets", Napi::Number::New(env, double(s->kernelPackets)));
  o.Set("drops", Napi::Number::New(env, double(s->kernelDrops)));
  return o;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Socket* s = socketArg(info);
  if (s) {
    sockets[info[0].As<Napi::Number>().Uint32Value()] = nullptr;
    release(s);
  }
  return info.Env().Undefined();
}

/** The offloads that make frames larger than the MTU or leave checksums unfinished, by legacy ethtool command. */
struct Offload { const char* name; uint32_t get, set; };
constexpr Offload OFFLOADS[] = {
  { "gro", ETHTOOL_GGRO, ETHTOOL_SGRO },
  { "gso", ETHTOOL_GGSO, ETHTOOL_SGSO },
  { "tso", ETHTOOL_GTSO, ETHTOOL_STSO },
  { "tx-checksum", ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM },
  { "rx-checksum", ETHTOOL_GRXCSUM, ETHTOOL_SRXCSUM },
};

/** Sets each named offload to `on`, as far as it can. */
void setOffloads(const std::string& ifname, Napi::Array names, uint32_t on) {
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).As<Napi::String>();
    for (const Offload& o : OFFLOADS) {
      if (name != o.name) continue;
      ethtool_value v{ o.set, on };
      ifreq ifr{};
      ifr.ifr_data = reinterpret_cast<char*>(&v);
      ifreqIoctl(ifname, SIOCETHTOOL, ifr);
    }
  }
}

/**
 * disableOffloads(ifname) -> names of the offloads it turned off (those already off are not listed). One the
 * driver cannot change (fixed on, as a virtio NIC's rx-checksum) is left as it is; on any other failure, those
 * it had turned off are turned back on before it fails.
 */
Napi::Value DisableOffloads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ifname = info[0].As<Napi::String>();
  if (!if_nametoindex(ifname.c_str())) return failErrno(env, ifname, "", ENODEV);
  Napi::Array changed = Napi::Array::New(env);
  for (const Offload& o : OFFLOADS) {
    ethtool_value v{};
    v.cmd = o.get;
    ifreq ifr{};
    ifr.ifr_data = reinterpret_cast<char*>(&v);
    if (ifreqIoctl(ifname, SIOCETHTOOL, ifr) != 0 || !v.data) continue;  // not supported, or already off
    v = { o.set, 0 };
    ifr.ifr_data = reinterpret_cast<char*>(&v);
    if (int err = ifreqIoctl(ifname, SIOCETHTOOL, ifr)) {
      if (err == EOPNOTSUPP) continue;  // fixed by the driver
      setOffloads(ifname, changed, 1);
      return failErrno(env, ifname, std::string("turning off ") + o.name, err);
    }
    changed.Set(changed.Length(), Napi::String::New(env, o.name));
  }
  return changed;
}

/** restoreOffloads(ifname, names) -> false when the interface is gone: turns the named offloads back on, as far as it can. */
Napi::Value RestoreOffloads(const Napi::CallbackInfo& info) {
  std::string ifname = info[0].As<Napi::String>();
  if (!if_nametoindex(ifname.c_str())) return Napi::Boolean::New(info.Env(), false);
  setOffloads(ifname, info[1].As<Napi::Array>(), 1);
  return Napi::Boolean::New(info.Env(), true);
}

/**
 * wait(ids, timeoutMs) -> how many of the receive sockets have frames to read. Sleeps in poll() until
 * one of them has frames (a V3 block handed over, a V2 frame written), or the timeout passes: an idle
 * engine then spends no CPU, and wakes as frames arrive instead of after a timer.
 */
Napi::Value Wait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array ids = info[0].As<Napi::Array>();
  int timeoutMs = info[1].As<Napi::Number>().Int32Value();
  std::vector<pollfd> fds;
  std::vector<Socket*> polled;
  std::vector<uint32_t> polledIds;
  for (uint32_t i = 0; i < ids.Length(); i++) {
    uint32_t id = ids.Get(i).As<Napi::Number>().Uint32Value();
    if (id < sockets.size() && sockets[id]) { fds.push_back({ sockets[id]->fd, POLLIN, 0 }); polled.push_back(sockets[id]); polledIds.push_back(id); }
  }
  if (fds.empty()) return Napi::Number::New(env, 0);
  int ready = poll(fds.data(), fds.size(), timeoutMs);
  // A link set down leaves an error on the socket, which a ring never reads: poll would return at once
  // from then on. Reading the error clears it. A link that loses its carrier (a cable pulled, a veth's peer set
  // down) leaves none, and brings no frame: the flags of a socket's link that brought none are looked at, at most
  // every LINK_LOOK_MS (an ioctl a wait cost the busy path). While the link is down, each wait looks whether it is
  // up again, or gone (deleted, or made anew under its name: the socket is bound to the old one for good).
  constexpr int64_t LINK_LOOK_MS = 100;
  auto linkUp = [](Socket* s) {
    ifreq ifr{};
    return ifreqIoctl(s->ifname, SIOCGIFFLAGS, ifr) == 0 && (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
  };
  int64_t nowMs = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  for (size_t i = 0; i < fds.size(); i++) {
    Socket* s = polled[i];
    if (fds[i].revents & POLLERR) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == ENETDOWN) s->down = s->wentDown = true;
    }
    if (!s->down && !(fds[i].revents & POLLIN) && nowMs - s->linkLookedMs >= LINK_LOOK_MS) {
      s->linkLookedMs = nowMs;
      if (!linkUp(s)) s->down = s->wentDown = true;
    }
    if (!s->down) continue;
    if (if_nametoindex(s->ifname.c_str()) != s->ifindex) {
      // Its error names the socket, so that the caller can name the element that had it.
      Napi::Error e = codedError(env, "EGONE", s->ifname + ": the interface went away while in use");
      e.Set("socket", Napi::Number::New(env, polledIds[i]));
      e.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (linkUp(s)) s->down = false;
  }
  return Napi::Number::New(env, ready < 0 ? 0 : ready);
}

/** linkWentDown(id) -> whether the socket's link went down since the last call (then forgets it). */
Napi::Value LinkWentDown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Socket* s = socketArg(info);
  if (!s) return env.Undefined();
  bool wentDown = s->wentDown;
  s->wentDown = false;
  return Napi::Boolean::New(env, wentDown);
}

/**
 * adviseHugePages(memory, from, to) -> whether the kernel took the advice: the 2 MiB pages that [from, to) of the
 * memory touches may be backed by transparent huge pages (MADV_HUGEPAGE), so that pages faulted in there later
 * come 2 MiB at a time. Flow tables of millions of entries then need a TLB entry per 2 MiB, not per 4 KiB.
 */
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array memory = info[0].As<Napi::Uint8Array>();
  uint64_t from = info[1].As<Napi::Number>().Int64Value();
  uint64_t to = info[2].As<Napi::Number>().Int64Value();
  if (from >= to || to > memory.ByteLength()) return Napi::Boolean::New(env, false);
  constexpr uintptr_t huge = uintptr_t(2) << 20;
  uintptr_t base = reinterpret_cast<uintptr_t>(memory.Data());
  // Whole 2 MiB pages of the memory only: one that reaches past its start or end is no one huge page anyway (part of it
  // is another mapping, or not yet accessible), and the advice must not touch a neighbour. The page that holds `from`
  // is advised from its start: the memory grew into it.
  uintptr_t first = (base + huge - 1) & ~(huge - 1);
  uintptr_t start = std::max((base + from) & ~(huge - 1), first);
  uintptr_t end = (base + to) & ~(huge - 1);
  if (end <= start) return Napi::Boolean::New(env, false);
  return Napi::Boolean::New(env, madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE) == 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("adviseHugePages", Napi::Function::New(env, AdviseHugePages));
  exports.Set("openRx", Napi::Function::New(env, OpenRx));
  exports.Set("openTx", Napi::Function::New(env, OpenTx));
  exports.Set("check", Napi::Function::New(env, Check));
  exports.Set("receive", Napi::Function::New(env, Receive));
  exports.Set("send", Napi::Function::New(env, Send));
  exports.Set("sendError", Napi::Function::New(env, SendError));
  exports.Set("stats", Napi::Function::New(env, Stats));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("wait", Napi::Function::New(env, Wait));
  exports.Set("linkWentDown", Napi::Function::New(env, LinkWentDown));
  exports.Set("disableOffloads", Napi::Function::New(env, DisableOffloads));
  exports.Set("restoreOffloads", Napi::Function::New(env, RestoreOffloads));
  exports.Set("rxDescBytes", Napi::Number::New(env, sizeof(RxDesc)));
  return exports;
}

}  // namespace

NODE_API_MODULE(afpacket, Init)
