/* safetensors.c: the safetensors container (8-byte little-endian header
 * length, JSON header, raw tensors). st_open checks every size, offset,
 * dtype and overlap before anything is read through it; st_write writes
 * atomically (path.tmp, fsync, rename). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tflm reads and writes little-endian tensors in place: a little-endian host is required"
#endif

#define MAX_HEADER ((uint64_t)100 << 20)

static const char *dtype_names[] = { "F32", "F16", "BF16" };
static const size_t dtype_size[] = { 4, 2, 2 };

/* ---- reading the file ---------------------------------------------------- */

static tflm_status read_all(int fd, uint8_t *buf, size_t n, const char *path) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return tflm__err(TFLM_EIO, "%s: read failed: %s", path,
                             k < 0 ? strerror(errno) : "file shrank while reading");
        got += (size_t)k;
    }
    return TFLM_OK;
}

static tflm_status load_bytes(StFile *f, const char *path, int use_mmap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tflm__err(TFLM_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    tflm_status st = TFLM_OK;
    if (fstat(fd, &sb) != 0)
        st = tflm__err(TFLM_EIO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = tflm__err(TFLM_EIO, "%s: not a regular file", path);
    else if (sb.st_size < 8)
        st = tflm__err(TFLM_EFORMAT, "%s: file is %lld bytes, shorter than the 8-byte header "
                       "length (truncated?)", path, (long long)sb.st_size);
    if (st) {
        close(fd);
        return st;
    }
    f->size = (size_t)sb.st_size;
    if (use_mmap) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            f->map = p;
            f->mapped = 1;
        }
    }
    if (!f->map) {
        f->map = malloc(f->size);
        st = f->map ? read_all(fd, f->map, f->size, path)
                    : tflm__err(TFLM_ENOMEM, "%s: out of memory reading %zu bytes", path, f->size);
    }
    close(fd);
    return st;
}

/* ---- checking the header ------------------------------------------------- */

static tflm_status check_meta(json_t *meta, const char *path) {
    if (!json_is_object(meta))
        return tflm__err(TFLM_EFORMAT, "%s: __metadata__ is not an object", path);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v))
            return tflm__err(TFLM_EFORMAT, "%s: __metadata__ entry '%.60s' is not a string", path,
                             k);
    }
    return TFLM_OK;
}

static tflm_status parse_dtype(json_t *e, const char *path, const char *name, int *dtype) {
    json_t *d = json_object_get(e, "dtype");
    if (!json_is_string(d))
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': dtype is missing", path, name);
    for (int i = 0; i < 3; i++)
        if (strcmp(json_string_value(d), dtype_names[i]) == 0) {
            *dtype = i;
            return TFLM_OK;
        }
    return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': dtype '%.20s' is not supported (F32, F16 "
                     "or BF16)", path, name, json_string_value(d));
}

/* shape -> t->ndim, t->shape and the element count (overflow-checked) */
static tflm_status parse_shape(json_t *e, const char *path, StTensor *t, size_t *numel) {
    json_t *s = json_object_get(e, "shape");
    if (!json_is_array(s))
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': shape is missing", path, t->name);
    if (json_array_size(s) > 4)
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': shape has %zu dimensions (at most 4)",
                         path, t->name, json_array_size(s));
    t->ndim = (int)json_array_size(s);
    *numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *x = json_array_get(s, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': shape entry %d is not a "
                             "non-negative integer", path, t->name, i);
        t->shape[i] = json_integer_value(x);
        size_t dim = (size_t)t->shape[i];
        if (dim && *numel > SIZE_MAX / 8 / dim)
            return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': shape is absurdly large", path,
                             t->name);
        *numel *= dim;
    }
    return TFLM_OK;
}

static tflm_status parse_offsets(json_t *e, const char *path, StTensor *t, size_t data_len) {
    json_t *o = json_object_get(e, "data_offsets");
    json_t *a = json_array_get(o, 0), *b = json_array_get(o, 1);
    if (!json_is_array(o) || json_array_size(o) != 2 || !json_is_integer(a) ||
        !json_is_integer(b))
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': data_offsets must be [begin, end]",
                         path, t->name);
    long long lo = json_integer_value(a), hi = json_integer_value(b);
    if (lo < 0 || hi < lo)
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] are not "
                         "0 <= begin <= end", path, t->name, lo, hi);
    if ((unsigned long long)hi > data_len)
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] run past the "
                         "end of the file (data section is %zu bytes)", path, t->name, lo, hi,
                         data_len);
    t->off = (size_t)lo;
    t->len = (size_t)(hi - lo);
    return TFLM_OK;
}

static tflm_status parse_tensor(StTensor *t, const char *name, json_t *e, const char *path,
                                size_t data_len) {
    if (strlen(name) >= sizeof t->name)
        return tflm__err(TFLM_EFORMAT, "%s: tensor name '%.40s...' is longer than %zu bytes",
                         path, name, sizeof t->name - 1);
    snprintf(t->name, sizeof t->name, "%s", name);
    if (!json_is_object(e))
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s': entry is not an object", path, name);
    size_t numel = 0;
    tflm_status st = parse_dtype(e, path, name, &t->dtype);
    if (!st)
        st = parse_shape(e, path, t, &numel);
    if (!st)
        st = parse_offsets(e, path, t, data_len);
    if (!st && t->len != numel * dtype_size[t->dtype])
        st = tflm__err(TFLM_EFORMAT, "%s: tensor '%s': holds %zu bytes, but its shape and dtype "
                       "need %zu", path, name, t->len, numel * dtype_size[t->dtype]);
    return st;
}

static int by_offset(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : (x->len > y->len) - (x->len < y->len);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

static tflm_status check_overlaps(StFile *f, const char *path) {
    const StTensor **s = malloc(sizeof *s * (size_t)(f->nt ? f->nt : 1));
    if (!s)
        return tflm__err(TFLM_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < f->nt; i++)
        s[i] = &f->t[i];
    qsort(s, (size_t)f->nt, sizeof *s, by_offset);
    tflm_status st = TFLM_OK;
    size_t end = 0;
    const StTensor *last = NULL;
    for (int i = 0; i < f->nt && !st; i++) {
        if (s[i]->len == 0)
            continue;
        if (last && s[i]->off < end)
            st = tflm__err(TFLM_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data section",
                           path, last->name, s[i]->name);
        end = s[i]->off + s[i]->len;
        last = s[i];
    }
    free(s);
    return st;
}

static tflm_status parse_header(StFile *f, json_t *root, const char *path) {
    size_t data_len = f->size - f->data_off;
    f->t = calloc(json_object_size(root) + 1, sizeof *f->t);
    if (!f->t)
        return tflm__err(TFLM_ENOMEM, "%s: out of memory", path);
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        tflm_status st;
        if (strcmp(k, "__metadata__") == 0) {
            if ((st = check_meta(v, path)))
                return st;
            f->meta = json_incref(v);
            continue;
        }
        if ((st = parse_tensor(&f->t[f->nt], k, v, path, data_len)))
            return st;
        f->nt++;
    }
    tflm_status st = check_overlaps(f, path);
    if (!st)
        qsort(f->t, (size_t)f->nt, sizeof *f->t, by_name);
    return st;
}

static tflm_status check_container(StFile *f, const char *path) {
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)f->map[i] << (8 * i);
    if (n > f->size - 8)
        return tflm__err(TFLM_EFORMAT, "%s: header length %llu runs past the end of the file "
                         "(%zu bytes)", path, (unsigned long long)n, f->size);
    if (n > MAX_HEADER)
        return tflm__err(TFLM_EFORMAT, "%s: header length %llu is absurd (limit %llu)", path,
                         (unsigned long long)n, (unsigned long long)MAX_HEADER);
    f->data_off = 8 + (size_t)n;
    json_error_t e;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &e);
    if (!root)
        return tflm__err(TFLM_EFORMAT, "%s: header is not valid JSON: %s (at byte %d)", path,
                         e.text, e.position);
    tflm_status st = json_is_object(root) ? parse_header(f, root, path)
                   : tflm__err(TFLM_EFORMAT, "%s: header is not a JSON object", path);
    json_decref(root);
    return st;
}

tflm_status st_open(StFile *f, const char *path, int use_mmap) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    tflm_status st = load_bytes(f, path, use_mmap);
    if (!st)
        st = check_container(f, path);
    if (st)
        st_close(f);
    return st;
}

void st_close(StFile *f) {
    if (f->map && f->mapped)
        munmap(f->map, f->size);
    else
        free(f->map);
    free(f->t);
    json_decref(f->meta);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

const StTensor *st_find(const StFile *f, const char *name) {
    StTensor key;
    if (!f->t || strlen(name) >= sizeof key.name)
        return NULL;
    snprintf(key.name, sizeof key.name, "%s", name);
    return bsearch(&key, f->t, (size_t)f->nt, sizeof *f->t, by_name);
}

const char *st_meta(const StFile *f, const char *key) {
    return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}

/* ---- writing --------------------------------------------------------------- */

static tflm_status write_all(int fd, const void *buf, size_t n, const char *tmp) {
    const uint8_t *p = buf;
    while (n > 0) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t k = write(fd, p, chunk);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return tflm__err(TFLM_EIO, "%s: write failed: %s", tmp,
                             k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (size_t)k;
    }
    return TFLM_OK;
}

/* header JSON, padded with spaces to a multiple of 8; malloc'ed */
static char *make_header(const StWriteTensor *t, int nt, json_t *meta, size_t *len) {
    json_t *root = json_object();
    if (meta && json_object_size(meta) > 0)
        json_object_set(root, "__metadata__", meta);
    size_t off = 0;
    for (int i = 0; i < nt; i++) {
        json_t *shape = json_array();
        size_t numel = 1;
        for (int j = 0; j < t[i].ndim; j++) {
            json_array_append_new(shape, json_integer(t[i].shape[j]));
            numel *= (size_t)t[i].shape[j];
        }
        json_object_set_new(root, t[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", "F32", "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + 4 * numel)));
        off += 4 * numel;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(root);
    if (!s)
        return NULL;
    size_t n = strlen(s), padded = (n + 7) / 8 * 8;
    char *h = realloc(s, padded + 1);
    if (!h) {
        free(s);
        return NULL;
    }
    memset(h + n, ' ', padded - n);
    h[padded] = 0;
    *len = padded;
    return h;
}

static tflm_status write_body(int fd, const char *hdr, size_t hlen, const StWriteTensor *t,
                              int nt, const char *tmp) {
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    tflm_status st = write_all(fd, len8, 8, tmp);
    if (!st)
        st = write_all(fd, hdr, hlen, tmp);
    for (int i = 0; i < nt && !st; i++) {
        size_t numel = 1;
        for (int j = 0; j < t[i].ndim; j++)
            numel *= (size_t)t[i].shape[j];
        st = write_all(fd, t[i].data, numel * 4, tmp);
    }
    if (!st && fsync(fd) != 0)
        st = tflm__err(TFLM_EIO, "%s: fsync failed: %s", tmp, strerror(errno));
    return st;
}

/* make the rename durable; failure here loses nothing already written */
static void sync_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

tflm_status st_write(const char *path, const StWriteTensor *t, int nt, json_t *meta) {
    if (!path || (nt > 0 && !t))
        return tflm__err(TFLM_EINVAL, "st_write: no path or tensors");
    if (meta && !json_is_object(meta))
        return tflm__err(TFLM_EINVAL, "%s: metadata must be a JSON object", path);
    size_t hlen = 0;
    char *hdr = make_header(t, nt, meta, &hlen);
    size_t plen = strlen(path) + 5;
    char *tmp = malloc(plen);
    if (!hdr || !tmp) {
        free(hdr);
        free(tmp);
        return tflm__err(TFLM_ENOMEM, "%s: out of memory writing the header", path);
    }
    snprintf(tmp, plen, "%s.tmp", path);
    tflm_status st = TFLM_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = tflm__err(TFLM_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        st = write_body(fd, hdr, hlen, t, nt, tmp);
        if (close(fd) != 0 && !st)
            st = tflm__err(TFLM_EIO, "%s: close failed: %s", tmp, strerror(errno));
        if (!st && rename(tmp, path) != 0)
            st = tflm__err(TFLM_EIO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        if (st)
            unlink(tmp);
        else
            sync_dir(path);
    }
    free(hdr);
    free(tmp);
    return st;
}
