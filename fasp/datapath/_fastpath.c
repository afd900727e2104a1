/* Optional compiled batch path for the hot loops: seal a run of DATA datagrams in one call (sender), read a
 * batch of datagrams with one system call and open them in one call (receiver).
 *
 * The pure-Python twins are fasp.datapath.seal.Seal.seal_data and Seal.open_batch, and
 * fasp.datapath.udpsocket.UdpSocket.recv_batch's recvmsg loop; both paths must give identical results
 * (tests/datapath/test_fastpath.py). The wire is version 3 of fasp/datapath/datagram.py,
 * which stays the one definition: the header prefix, the version, the connection id and the header size of
 * each type come from Python, and seal.py uses this module only if its WIRE equals datagram.py's layout.
 *
 *   header = prefix (datagram.header_prefix: flags u8 (version 3 | type 4 | direction 1), connection id 2s)
 *            || seq u32 (low 32 bits) [|| ts u32 || echo u32, every type but DATA]
 *   DATA body = file_id u32 | offset u48 (u16 high, u32 low) || payload (its length: the rest)
 *   nonce  = "!IQ" (direction, full 64-bit seq)
 *   encrypted:  header || AES-GCM(body, aad = header) || tag
 *   -T (GMAC):  header || body || GMAC(aad = header || body)
 *
 * The opener restores the full seq from its low 32 bits as the one nearest the highest accepted (QUIC's rule,
 * datagram.full_seq); the highest advances here with each authentic datagram of the batch, as the replay
 * window's does when Seal.open_batch applies it after this call.
 * AES-GCM comes from OpenSSL's EVP (libcrypto), as it does for the `cryptography` package.
 */
#define _GNU_SOURCE /* recvmmsg */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <openssl/evp.h>

#define WIRE_VERSION 3
#define TAG_SIZE 16
#define PREFIX_SIZE 3                      /* flags, connection id */
#define CID_SIZE 2
#define HEADER_SIZE (PREFIX_SIZE + 4)      /* datagram.HEADER_SIZE: a DATA datagram's */
#define CONTROL_HEADER_SIZE (HEADER_SIZE + 8) /* + ts, echo */
#define DATA_HEAD_SIZE 10                  /* datagram.DATA_HEAD: u32 file_id, u16 + u32 offset */
#define MAX_OFFSET (1ULL << 48)
#define MAX_PAYLOAD 65536ULL                /* more than a UDP datagram holds; keeps OpenSSL's int lengths */
#define NONCE_SIZE 12
#define RECV_SIZE 65536                    /* udpsocket.RECV_BUFFER: a message, GRO segments included */

static void put16(unsigned char *p, uint16_t v) {
    p[0] = v >> 8; p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void put64(unsigned char *p, uint64_t v) {
    put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v);
}

static void put_header(unsigned char *p, const unsigned char *prefix, uint64_t seq) {
    memcpy(p, prefix, PREFIX_SIZE);
    put32(p + PREFIX_SIZE, (uint32_t)seq);
}

static void put_data_head(unsigned char *p, uint32_t file_id, uint64_t offset) {
    put32(p, file_id); put16(p + 4, (uint16_t)(offset >> 32)); put32(p + 6, (uint32_t)offset);
}

static const EVP_CIPHER *cipher_for(Py_ssize_t key_len) {
    switch (key_len) {
    case 16: return EVP_aes_128_gcm();
    case 24: return EVP_aes_192_gcm();
    case 32: return EVP_aes_256_gcm();
    default: return NULL;
    }
}

/* Seal one datagram into out (HEADER_SIZE + DATA_HEAD_SIZE + length + TAG_SIZE bytes, header and head
 * written); 0 on failure. */
static int seal_one(EVP_CIPHER_CTX *ctx, int encrypted, unsigned char *out, const unsigned char *nonce,
                    const unsigned char *payload, Py_ssize_t length) {
    int n;
    unsigned char *body = out + HEADER_SIZE;
    Py_ssize_t body_len = DATA_HEAD_SIZE + length;
    memcpy(body + DATA_HEAD_SIZE, payload, length);
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1) return 0;
    if (encrypted) {
        if (EVP_EncryptUpdate(ctx, NULL, &n, out, HEADER_SIZE) != 1) return 0;
        if (EVP_EncryptUpdate(ctx, body, &n, body, (int)body_len) != 1) return 0;
    } else if (EVP_EncryptUpdate(ctx, NULL, &n, out, (int)(HEADER_SIZE + body_len)) != 1) {
        return 0;
    }
    if (EVP_EncryptFinal_ex(ctx, body + body_len, &n) != 1) return 0;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, body + body_len) == 1;
}

PyDoc_STRVAR(seal_data_doc,
"seal_data(key, encrypted, direction, seq, prefix, file_id, base, block, runs) -> list[bytes]\n\n"
"Sealed DATA datagrams, one per (offset, length) in runs, numbered from seq (the full 64-bit count);\n"
"prefix is datagram.header_prefix(DATA, direction, cid); each payload is\n"
"block[offset - base : offset - base + length].");

static PyObject *seal_data(PyObject *self, PyObject *args) {
    Py_buffer key, prefix, block;
    int encrypted;
    unsigned int direction, file_id;
    unsigned long long seq, base;
    PyObject *runs, *result = NULL, *seq_runs = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    if (!PyArg_ParseTuple(args, "y*pIKy*IKy*O", &key, &encrypted, &direction, &seq, &prefix, &file_id, &base,
                          &block, &runs))
        return NULL;
    const EVP_CIPHER *cipher = cipher_for(key.len);
    if (cipher == NULL || prefix.len != PREFIX_SIZE) {
        PyErr_SetString(PyExc_ValueError, "need a 16, 24 or 32-byte AES-GCM key and a 3-byte header prefix");
        goto done;
    }
    seq_runs = PySequence_Fast(runs, "runs must be a sequence of (offset, length)");
    if (seq_runs == NULL) goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq_runs);
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_EncryptInit_ex(ctx, cipher, NULL, key.buf, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-GCM");
        goto done;
    }
    result = PyList_New(count);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned long long offset, length;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq_runs, i), "KK", &offset, &length)) goto fail;
        if (offset < base || offset - base > (unsigned long long)block.len ||
            length > (unsigned long long)block.len - (offset - base)) {
            PyErr_SetString(PyExc_ValueError, "run outside the block");
            goto fail;
        }
        if (offset >= MAX_OFFSET || length > MAX_PAYLOAD) {
            PyErr_SetString(PyExc_ValueError, "offset beyond 48 bits or a payload no datagram holds");
            goto fail;
        }
        PyObject *datagram = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + DATA_HEAD_SIZE + length + TAG_SIZE);
        if (datagram == NULL) goto fail;
        PyList_SET_ITEM(result, i, datagram);
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(datagram);
        unsigned char nonce[NONCE_SIZE];
        uint64_t s = seq + (uint64_t)i;
        put_header(out, prefix.buf, s);
        put_data_head(out + HEADER_SIZE, file_id, offset);
        put32(nonce, direction);
        put64(nonce + 4, s);
        int ok;
        Py_BEGIN_ALLOW_THREADS
        ok = seal_one(ctx, encrypted, out, nonce, (const unsigned char *)block.buf + (offset - base),
                      (Py_ssize_t)length);
        Py_END_ALLOW_THREADS
        if (!ok) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL AES-GCM failed");
            goto fail;
        }
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    EVP_CIPHER_CTX_free(ctx);
    Py_XDECREF(seq_runs);
    PyBuffer_Release(&key);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&block);
    return result;
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* datagram.full_seq: the 64-bit number whose low 32 bits are low, nearest expected. */
static uint64_t full_seq(uint32_t low, uint64_t expected) {
    const uint64_t window = 1ULL << 32, half = window / 2;
    uint64_t candidate = (expected & ~(window - 1)) | low;
    if (expected >= half && candidate <= expected - half && candidate < 0ULL - window) return candidate + window;
    if (candidate > expected && candidate - expected > half && candidate >= window) return candidate - window;
    return candidate;
}

/* One received datagram: (type, seq, ts, echo, body), Py_None if malformed, foreign, reflected or forged,
 * NULL on a Python error. *expected (the highest accepted + 1) advances past an authentic one; the replay
 * window stays in Python (Seal.open_batch). */
static PyObject *open_one(EVP_CIPHER_CTX *ctx, int encrypted, unsigned int version, unsigned int peer_direction,
                          const unsigned char *cid, const unsigned char *header_sizes, uint64_t *expected,
                          const unsigned char *p, Py_ssize_t len) {
    if (len < HEADER_SIZE + TAG_SIZE) Py_RETURN_NONE;
    unsigned int type = p[0] >> 1 & 0xF;
    Py_ssize_t header_size = header_sizes[type];
    if ((unsigned int)(p[0] >> 5) != version || header_size == 0 || len < header_size + TAG_SIZE) Py_RETURN_NONE;
    if (memcmp(p + 1, cid, CID_SIZE) != 0 || (unsigned int)(p[0] & 1) != peer_direction) Py_RETURN_NONE;
    uint64_t seq = full_seq(get32(p + PREFIX_SIZE), *expected);
    unsigned char nonce[NONCE_SIZE];
    put32(nonce, peer_direction);
    put64(nonce + 4, seq);
    Py_ssize_t body_len = len - header_size - TAG_SIZE;
    PyObject *body = PyBytes_FromStringAndSize(NULL, body_len);
    if (body == NULL) return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(body);
    int n, ok;
    Py_BEGIN_ALLOW_THREADS
    ok = EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) == 1;
    if (ok && encrypted) {
        ok = EVP_DecryptUpdate(ctx, NULL, &n, p, (int)header_size) == 1 &&
             EVP_DecryptUpdate(ctx, out, &n, p + header_size, (int)body_len) == 1;
    } else if (ok) {
        ok = EVP_DecryptUpdate(ctx, NULL, &n, p, (int)(header_size + body_len)) == 1;
        memcpy(out, p + header_size, body_len);
    }
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, (void *)(p + len - TAG_SIZE)) == 1 &&
         EVP_DecryptFinal_ex(ctx, out + body_len, &n) > 0;
    Py_END_ALLOW_THREADS
    if (!ok) {
        Py_DECREF(body);
        Py_RETURN_NONE;
    }
    if (seq >= *expected) *expected = seq + 1;
    int clocks = header_size > HEADER_SIZE; /* ts, echo: every type but DATA */
    uint32_t ts = clocks ? get32(p + HEADER_SIZE) : 0, echo = clocks ? get32(p + HEADER_SIZE + 4) : 0;
    return Py_BuildValue("(IKIIN)", type, (unsigned long long)seq, ts, echo, body);
}

PyDoc_STRVAR(open_batch_doc,
"open_batch(key, encrypted, version, peer_direction, cid, header_sizes, expected, packets) -> list[tuple | None]\n\n"
"Each packet authenticated and opened: (type, seq, ts, echo, body), or None if malformed, foreign,\n"
"reflected or forged. header_sizes: 16 bytes, the header size of each known type, 0 for the others;\n"
"expected: the highest seq accepted + 1, the base of the first packet's seq. Replays are not checked here.");

static PyObject *open_batch(PyObject *self, PyObject *args) {
    Py_buffer key, cid, header_sizes;
    int encrypted;
    unsigned int version, peer_direction;
    unsigned long long expected;
    PyObject *packets, *seq_packets = NULL, *result = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    if (!PyArg_ParseTuple(args, "y*pIIy*y*KO", &key, &encrypted, &version, &peer_direction, &cid, &header_sizes,
                          &expected, &packets))
        return NULL;
    const EVP_CIPHER *cipher = cipher_for(key.len);
    if (cipher == NULL || cid.len != CID_SIZE || header_sizes.len != 16) {
        PyErr_SetString(PyExc_ValueError, "need a 16, 24 or 32-byte key, a 2-byte connection id, 16 header sizes");
        goto done;
    }
    seq_packets = PySequence_Fast(packets, "packets must be a sequence of buffers");
    if (seq_packets == NULL) goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq_packets);
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_DecryptInit_ex(ctx, cipher, NULL, key.buf, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-GCM");
        goto done;
    }
    result = PyList_New(count);
    if (result == NULL) goto done;
    uint64_t next = expected;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_buffer packet;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq_packets, i), &packet, PyBUF_SIMPLE) != 0) {
            Py_CLEAR(result);
            goto done;
        }
        PyObject *opened = open_one(ctx, encrypted, version, peer_direction, cid.buf, header_sizes.buf, &next,
                                    packet.buf, packet.len);
        PyBuffer_Release(&packet);
        if (opened == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, opened);
    }
done:
    EVP_CIPHER_CTX_free(ctx);
    Py_XDECREF(seq_packets);
    PyBuffer_Release(&key);
    PyBuffer_Release(&cid);
    PyBuffer_Release(&header_sizes);
    return result;
}


#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#define MAX_MESSAGES 64

/* A source address as Python's socket module gives it: (host, port) for IPv4, (host, port, flowinfo,
 * scope_id) for IPv6, the host from getnameinfo(NI_NUMERICHOST) as socket.makeipaddr does. */
static PyObject *address(const struct sockaddr_storage *sa, socklen_t len) {
    char host[NI_MAXHOST];
    int err = getnameinfo((const struct sockaddr *)sa, len, host, sizeof host, NULL, 0, NI_NUMERICHOST);
    if (err != 0) {
        PyErr_Format(PyExc_OSError, "getnameinfo: %s", gai_strerror(err));
        return NULL;
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        return Py_BuildValue("(sHII)", host, ntohs(a->sin6_port), (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    return Py_BuildValue("(sH)", host, ntohs(((const struct sockaddr_in *)sa)->sin_port));
}

/* The GRO segment size of a received message (0: one datagram). */
static int gro_segment(struct msghdr *msg) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int seg = 0; /* an int, native order, as udpsocket reads it (zero-padded if shorter) */
            size_t len = c->cmsg_len - CMSG_LEN(0);
            memcpy(&seg, CMSG_DATA(c), len < sizeof seg ? len : sizeof seg);
            return seg;
        }
    }
    return 0;
}

PyDoc_STRVAR(recv_batch_doc,
"recv_batch(fd, buffer, count) -> list[tuple[bytes, address]]\n\n"
"The datagrams waiting in non-blocking UDP socket fd, up to count messages (at most 64) read with one\n"
"recvmmsg into buffer (writable, count x 65536 bytes), each message's GRO segments apart, with their\n"
"source address; [] if none wait. A refused send's ICMP error is skipped, as UdpSocket.recv_batch does.");

static PyObject *recv_batch(PyObject *self, PyObject *args) {
    int fd, count;
    Py_buffer buffer;
    if (!PyArg_ParseTuple(args, "iw*i", &fd, &buffer, &count)) return NULL;
    PyObject *result = NULL, *last_addr = NULL;
    struct mmsghdr msgs[MAX_MESSAGES];
    struct iovec iovs[MAX_MESSAGES];
    struct sockaddr_storage names[MAX_MESSAGES];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align; /* CMSG_FIRSTHDR reads a cmsghdr there */
    } controls[MAX_MESSAGES];
    if (count < 1 || count > MAX_MESSAGES || buffer.len < (Py_ssize_t)count * RECV_SIZE) {
        PyErr_SetString(PyExc_ValueError, "need 1..64 messages and a buffer of 65536 bytes for each");
        goto done;
    }
    memset(msgs, 0, sizeof(struct mmsghdr) * count);
    for (int i = 0; i < count; i++) {
        iovs[i].iov_base = (char *)buffer.buf + (Py_ssize_t)i * RECV_SIZE;
        iovs[i].iov_len = RECV_SIZE;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &names[i];
        msgs[i].msg_hdr.msg_namelen = sizeof names[i];
        msgs[i].msg_hdr.msg_control = controls[i].buf;
        msgs[i].msg_hdr.msg_controllen = sizeof controls[i].buf;
    }
    int got;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        got = recvmmsg(fd, msgs, (unsigned int)count, MSG_DONTWAIT, NULL);
        Py_END_ALLOW_THREADS
        if (got >= 0 || errno != ECONNREFUSED) break; /* ICMP from an earlier send; not a datagram's fault */
    }
    result = PyList_New(0);
    if (result == NULL) goto done;
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) goto done;
        PyErr_SetFromErrno(PyExc_OSError);
        Py_CLEAR(result);
        goto done;
    }
    struct sockaddr_storage *last_name = NULL;
    socklen_t last_len = 0;
    for (int i = 0; i < got; i++) {
        struct msghdr *msg = &msgs[i].msg_hdr;
        if (last_name == NULL || msg->msg_namelen != last_len || memcmp(msg->msg_name, last_name, last_len) != 0) {
            Py_XSETREF(last_addr, address(msg->msg_name, msg->msg_namelen));
            if (last_addr == NULL) goto fail;
            last_name = msg->msg_name;
            last_len = msg->msg_namelen;
        }
        const char *data = iovs[i].iov_base;
        Py_ssize_t len = msgs[i].msg_len;
        Py_ssize_t seg = gro_segment(msg);
        if (seg <= 0 || len <= seg) seg = len;
        Py_ssize_t pos = 0;
        do {
            Py_ssize_t n = len - pos < seg ? len - pos : seg;
            PyObject *item = Py_BuildValue("(y#O)", data + pos, n, last_addr);
            if (item == NULL || PyList_Append(result, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
            Py_DECREF(item);
            pos += n;
        } while (pos < len);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    Py_XDECREF(last_addr);
    PyBuffer_Release(&buffer);
    return result;
}

static PyMethodDef methods[] = {
    {"seal_data", seal_data, METH_VARARGS, seal_data_doc},
    {"open_batch", open_batch, METH_VARARGS, open_batch_doc},
    {"recv_batch", recv_batch, METH_VARARGS, recv_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fasp.datapath._fastpath",
    "Compiled batch sealing, receiving and opening of datagrams (optional; seal.Seal and udpsocket.UdpSocket\n"
    "have the pure-Python paths).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* the layout this build implements: (version, DATA header, other header, DATA head, tag) sizes */
    PyObject *wire = Py_BuildValue("(iiiii)", WIRE_VERSION, HEADER_SIZE, CONTROL_HEADER_SIZE, DATA_HEAD_SIZE,
                                   TAG_SIZE);
    int added = wire == NULL ? -1 : PyModule_AddObjectRef(m, "WIRE", wire);
    Py_XDECREF(wire);
    if (added < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
