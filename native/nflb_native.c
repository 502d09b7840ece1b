// nflb's only native code: it owns file descriptors and makes syscalls. Every netlink
// message is built and parsed in TypeScript. Expected failures come back as -errno so
// the hot path never pays for a JS exception; only bad arguments (and mmap/tun setup,
// which cannot return a number) throw.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <node_api.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

// Upper bound for one recvmmsg; the header arrays live in per-env instance data so a
// batch needs no allocation and worker threads never share them.
#define MAX_SLOTS 1024

typedef struct {
  struct mmsghdr msgs[MAX_SLOTS];
  struct iovec iov[MAX_SLOTS];
} env_data_t;

#define NAPI_CALL(env, call)                                      \
  do {                                                            \
    if ((call) != napi_ok) {                                      \
      const napi_extended_error_info *ei_ = NULL;                 \
      bool pending_ = false;                                      \
      napi_get_last_error_info((env), &ei_);                      \
      napi_is_exception_pending((env), &pending_);                \
      if (!pending_)                                              \
        napi_throw_error((env), NULL,                             \
                         ei_ && ei_->error_message                \
                             ? ei_->error_message                 \
                             : "N-API call failed: " #call);      \
      return NULL;                                                \
    }                                                             \
  } while (0)

static napi_value type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

// Throws an Error whose .code is the errno name (e.g. "EPERM").
static napi_value errno_error(napi_env env, const char *what, int err) {
  char msg[256];
  const char *name = strerrorname_np(err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, name ? name : "EUNKNOWN", msg);
  return NULL;
}

static napi_value num(napi_env env, double v) {
  napi_value r = NULL;
  napi_create_double(env, v, &r);
  return r;
}

static bool arg_int(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

// Byte view of a Uint8Array (the only buffer type the JS side passes).
static bool arg_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  if (napi_get_typedarray_info(env, v, &t, len, (void **)data, &ab, &off) != napi_ok)
    return false;
  return t == napi_uint8_array;
}

#define GET_ARGS(n)                                                   \
  size_t argc = (n);                                                  \
  napi_value argv[(n) > 0 ? (n) : 1];                                 \
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL)); \
  if (argc < (n)) return type_error(env, "expected " #n " arguments")

static napi_value nl_open(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int32_t rcvbuf;
  if (!arg_int(env, argv[0], &rcvbuf)) return type_error(env, "rcvbufBytes must be a number");
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return num(env, -errno);
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};  // nl_pid 0: kernel assigns
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return num(env, -e);
  }
  if (rcvbuf > 0) {
    // FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; without it take what we get.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
      (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  }
  // A full receive buffer must not surface as ENOBUFS on recv: the kernel counts the
  // packet as "user dropped" (or fails it open) and we keep reading.
  int one = 1;
  (void)setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
  return num(env, fd);
}

static napi_value nl_port_id(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int32_t fd;
  if (!arg_int(env, argv[0], &fd)) return type_error(env, "fd must be a number");
  struct sockaddr_nl sa;
  socklen_t sl = sizeof sa;
  if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) return num(env, -errno);
  return num(env, sa.nl_pid);
}

static napi_value nl_recv_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  int32_t fd, slot, slots;
  uint8_t *buf, *lensb;
  size_t buflen, lenslen;
  napi_typedarray_type t;
  napi_value ab;
  size_t off;
  if (!arg_int(env, argv[0], &fd) || !arg_int(env, argv[2], &slot) ||
      !arg_int(env, argv[3], &slots))
    return type_error(env, "fd, slotSize and maxSlots must be numbers");
  if (!arg_bytes(env, argv[1], &buf, &buflen)) return type_error(env, "buf must be a Uint8Array");
  if (napi_get_typedarray_info(env, argv[4], &t, &lenslen, (void **)&lensb, &ab, &off) != napi_ok ||
      t != napi_int32_array)
    return type_error(env, "lens must be an Int32Array");
  if (slot <= 0 || slots <= 0 || slots > MAX_SLOTS || (size_t)slots > lenslen ||
      (size_t)slot * (size_t)slots > buflen)
    return type_error(env, "slotSize/maxSlots do not fit buf, lens or the 1024-slot limit");
  env_data_t *d;
  NAPI_CALL(env, napi_get_instance_data(env, (void **)&d));
  for (int i = 0; i < slots; i++) {
    d->iov[i].iov_base = buf + (size_t)i * (size_t)slot;
    d->iov[i].iov_len = (size_t)slot;
    memset(&d->msgs[i].msg_hdr, 0, sizeof d->msgs[i].msg_hdr);
    d->msgs[i].msg_hdr.msg_iov = &d->iov[i];
    d->msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int n;
  do {
    n = recvmmsg(fd, d->msgs, (unsigned)slots, MSG_DONTWAIT, NULL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return num(env, (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno);
  int32_t *lens = (int32_t *)lensb;
  for (int i = 0; i < n; i++) {
    int32_t l = (int32_t)d->msgs[i].msg_len;
    // Truncated datagram: store minus the bytes kept, so the JS side can still try to
    // read the packet id and give a verdict.
    lens[i] = (d->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -l : l;
  }
  return num(env, n);
}

static napi_value nl_send(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int32_t fd, len;
  uint8_t *buf;
  size_t buflen;
  if (!arg_int(env, argv[0], &fd) || !arg_int(env, argv[2], &len))
    return type_error(env, "fd and len must be numbers");
  if (!arg_bytes(env, argv[1], &buf, &buflen)) return type_error(env, "buf must be a Uint8Array");
  if (len < 0 || (size_t)len > buflen) return type_error(env, "len out of range");
  struct sockaddr_nl k = {.nl_family = AF_NETLINK};  // pid 0: the kernel
  ssize_t r;
  do {
    r = sendto(fd, buf, (size_t)len, 0, (struct sockaddr *)&k, sizeof k);
  } while (r < 0 && errno == EINTR);
  return num(env, r < 0 ? -errno : (double)r);
}

static napi_value nl_recv_one(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int32_t fd, timeout;
  uint8_t *buf;
  size_t buflen;
  if (!arg_int(env, argv[0], &fd) || !arg_int(env, argv[2], &timeout))
    return type_error(env, "fd and timeoutMs must be numbers");
  if (!arg_bytes(env, argv[1], &buf, &buflen)) return type_error(env, "buf must be a Uint8Array");
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  do {
    r = poll(&p, 1, timeout);  // an EINTR restart may wait up to one extra timeout: fine here
  } while (r < 0 && errno == EINTR);
  if (r < 0) return num(env, -errno);
  if (r == 0) return num(env, 0);
  ssize_t n;
  do {
    n = recv(fd, buf, buflen, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return num(env, (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno);
  return num(env, (double)n);
}

// ---- readiness through libuv, on the loop of the calling env (main or worker) ----

enum { POLL_ACTIVE, POLL_CLOSING, POLL_CLOSED };

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref cb;
  napi_async_context actx;
  int state;
  bool finalized;  // the JS handle object is gone
} poll_t;

static void poll_closed(uv_handle_t *h) {
  poll_t *p = h->data;
  p->state = POLL_CLOSED;
  if (p->finalized) free(p);
}

static void poll_env_cleanup(void *arg);

static void poll_shutdown(poll_t *p, bool from_hook) {
  if (p->state != POLL_ACTIVE) return;
  uv_poll_stop(&p->handle);
  p->state = POLL_CLOSING;
  uv_close((uv_handle_t *)&p->handle, poll_closed);
  napi_delete_reference(p->env, p->cb);
  napi_async_destroy(p->env, p->actx);
  if (!from_hook) napi_remove_env_cleanup_hook(p->env, poll_env_cleanup, p);
}

// A worker's loop refuses to close with open handles, so env teardown closes ours.
static void poll_env_cleanup(void *arg) { poll_shutdown(arg, true); }

static void poll_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  poll_t *p = data;
  p->finalized = true;
  if (p->state == POLL_ACTIVE) poll_shutdown(p, false);  // unreachable handle: stop it
  else if (p->state == POLL_CLOSED) free(p);
}

static void poll_ready(uv_poll_t *h, int status, int events) {
  (void)events;
  poll_t *p = h->data;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, arg, result;
  if (napi_get_reference_value(env, p->cb, &cb) == napi_ok && cb != NULL) {
    napi_get_global(env, &recv);  // make_callback wants an object receiver
    napi_create_int32(env, status, &arg);
    // make_callback (not call_function) so nextTicks and promise jobs run afterwards,
    // as for any libuv callback in node core.
    if (napi_make_callback(env, p->actx, recv, cb, 1, &arg, &result) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);  // -> process 'uncaughtException'
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

static napi_value poll_start(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int32_t fd;
  napi_valuetype vt;
  if (!arg_int(env, argv[0], &fd)) return type_error(env, "fd must be a number");
  NAPI_CALL(env, napi_typeof(env, argv[1], &vt));
  if (vt != napi_function) return type_error(env, "callback must be a function");
  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  poll_t *p = calloc(1, sizeof *p);
  if (!p) return errno_error(env, "pollStart", ENOMEM);
  int r = uv_poll_init(loop, &p->handle, fd);
  if (r < 0) {
    free(p);
    napi_throw_error(env, uv_err_name(r), uv_strerror(r));
    return NULL;
  }
  p->handle.data = p;
  p->env = env;
  napi_value name, ext;
  NAPI_CALL(env, napi_create_string_utf8(env, "nflb:nlpoll", NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_async_init(env, NULL, name, &p->actx));
  NAPI_CALL(env, napi_create_reference(env, argv[1], 1, &p->cb));
  p->state = POLL_ACTIVE;
  NAPI_CALL(env, napi_add_env_cleanup_hook(env, poll_env_cleanup, p));
  r = uv_poll_start(&p->handle, UV_READABLE, poll_ready);
  if (r < 0) {
    poll_shutdown(p, false);
    p->finalized = true;  // no JS handle will exist; poll_closed frees
    napi_throw_error(env, uv_err_name(r), uv_strerror(r));
    return NULL;
  }
  NAPI_CALL(env, napi_create_external(env, p, poll_finalize, NULL, &ext));
  return ext;
}

static napi_value poll_stop(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  void *p = NULL;
  napi_valuetype vt;
  NAPI_CALL(env, napi_typeof(env, argv[0], &vt));
  if (vt != napi_external) return type_error(env, "expected a handle from pollStart");
  NAPI_CALL(env, napi_get_value_external(env, argv[0], &p));
  poll_shutdown(p, false);  // idempotent
  return NULL;
}

// ---- plain file descriptors ----

static napi_value fd_close(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int32_t fd;
  if (!arg_int(env, argv[0], &fd)) return type_error(env, "fd must be a number");
  return num(env, close(fd) < 0 ? -errno : 0);  // no EINTR retry: Linux closes anyway
}

static napi_value fd_write(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int32_t fd, len;
  uint8_t *buf;
  size_t buflen;
  if (!arg_int(env, argv[0], &fd) || !arg_int(env, argv[2], &len))
    return type_error(env, "fd and len must be numbers");
  if (!arg_bytes(env, argv[1], &buf, &buflen)) return type_error(env, "buf must be a Uint8Array");
  if (len < 0 || (size_t)len > buflen) return type_error(env, "len out of range");
  ssize_t r;
  do {
    r = write(fd, buf, (size_t)len);
  } while (r < 0 && errno == EINTR);
  return num(env, r < 0 ? -errno : (double)r);
}

static void unmap_buffer(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

static napi_value mmap_shared(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int32_t fd;
  int64_t size;
  if (!arg_int(env, argv[0], &fd) || napi_get_value_int64(env, argv[1], &size) != napi_ok)
    return type_error(env, "fd and size must be numbers");
  if (size <= 0) return type_error(env, "size must be positive");
  void *m = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return errno_error(env, "mmap", errno);
  napi_value ab;
  if (napi_create_external_arraybuffer(env, m, (size_t)size, unmap_buffer,
                                       (void *)(uintptr_t)size, &ab) != napi_ok) {
    munmap(m, (size_t)size);
    return errno_error(env, "mmapShared: external ArrayBuffer not allowed", ENOTSUP);
  }
  return ab;
}

static napi_value flock_fd(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int32_t fd, op;
  if (!arg_int(env, argv[0], &fd) || !arg_int(env, argv[1], &op))
    return type_error(env, "fd and op must be numbers");
  int r;
  do {
    r = flock(fd, op);
  } while (r < 0 && errno == EINTR);
  return num(env, r < 0 ? -errno : 0);
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71 /* Linux 5.14 */
#endif

/* The network namespace's cookie: unique for the boot, never reused (unlike the inode of
 * its nsfs file, which a later namespace may get). Decimal string; throws ENOPROTOOPT on
 * kernels without it. */
static napi_value netns_cookie(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_error(env, "socket", errno);
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  int r = getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  int e = errno;
  close(fd);
  if (r < 0) return errno_error(env, "getsockopt SO_NETNS_COOKIE", e);
  char text[24];
  snprintf(text, sizeof text, "%llu", (unsigned long long)cookie);
  napi_value v;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  return v;
}

static napi_value tun_open(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  struct ifreq ifr;
  size_t n = 0;
  memset(&ifr, 0, sizeof ifr);
  if (napi_get_value_string_utf8(env, argv[0], ifr.ifr_name, IFNAMSIZ, &n) != napi_ok)
    return type_error(env, "name must be a string");
  if (n >= IFNAMSIZ - 1) return type_error(env, "tun name longer than 15 bytes");
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno_error(env, "open /dev/net/tun", errno);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    return errno_error(env, "TUNSETIFF", e);
  }
  napi_value obj, vfd, vname;
  NAPI_CALL(env, napi_create_object(env, &obj));
  NAPI_CALL(env, napi_create_int32(env, fd, &vfd));
  NAPI_CALL(env, napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ),
                                         &vname));
  NAPI_CALL(env, napi_set_named_property(env, obj, "fd", vfd));
  NAPI_CALL(env, napi_set_named_property(env, obj, "name", vname));
  return obj;
}

static napi_value str_error(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int32_t e;
  if (!arg_int(env, argv[0], &e)) return type_error(env, "errno must be a number");
  char tmp[128];
  const char *s = strerror_r(e < 0 ? -e : e, tmp, sizeof tmp);  // accepts -errno too
  napi_value r;
  NAPI_CALL(env, napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r));
  return r;
}

static void free_env_data(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  env_data_t *d = calloc(1, sizeof *d);
  if (!d) return errno_error(env, "nflb_native init", ENOMEM);
  NAPI_CALL(env, napi_set_instance_data(env, d, free_env_data, NULL));
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"nlOpen", nl_open},       {"nlPortId", nl_port_id}, {"nlRecvBatch", nl_recv_batch},
      {"nlSend", nl_send},       {"nlRecvOne", nl_recv_one}, {"pollStart", poll_start},
      {"pollStop", poll_stop},   {"fdClose", fd_close},     {"fdWrite", fd_write},
      {"mmapShared", mmap_shared}, {"flock", flock_fd},     {"tunOpen", tun_open},
      {"strerror", str_error},   {"netnsCookie", netns_cookie},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    NAPI_CALL(env, napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f));
    NAPI_CALL(env, napi_set_named_property(env, exports, fns[i].name, f));
  }
  static const struct {
    const char *name;
    int value;
  } errs[] = {
      {"EAGAIN", EAGAIN}, {"EINTR", EINTR},   {"ENOBUFS", ENOBUFS}, {"EPERM", EPERM},
      {"EBUSY", EBUSY},   {"ENOENT", ENOENT}, {"ENODEV", ENODEV},   {"EINVAL", EINVAL},
      {"EEXIST", EEXIST}, {"EMSGSIZE", EMSGSIZE}, {"EBADF", EBADF}, {"EOPNOTSUPP", EOPNOTSUPP},
      {"EWOULDBLOCK", EWOULDBLOCK}, {"ENOTSUP", ENOTSUP}, {"ETIMEDOUT", ETIMEDOUT},
      {"EPROTONOSUPPORT", EPROTONOSUPPORT}, {"ENOMEM", ENOMEM},
  };
  napi_value eobj;
  NAPI_CALL(env, napi_create_object(env, &eobj));
  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
    NAPI_CALL(env, napi_set_named_property(env, eobj, errs[i].name, num(env, errs[i].value)));
  NAPI_CALL(env, napi_set_named_property(env, exports, "errno", eobj));
  return exports;
}
