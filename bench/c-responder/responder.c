/*
 * responder: a minimal SMTP responder, the baseline of bench/stdio-cost.
 *
 * One session on fd 0 (commands) and fd 1 (replies), as under tcpserver,
 * with spp-smtpd stdio's replies for plain sessions (no TLS, no AUTH, no
 * policy: every recipient is accepted; only control/me is read). A message
 * is stored as spp-smtpd's default Maildir queue stores it: Return-Path:,
 * X-Original-To: and Received: lines, then the body with dot-stuffing
 * undone and CRLF as LF, written to Maildir/tmp, fsynced, renamed into
 * Maildir/new, and new/ fsynced before the 250 reply.
 *
 * usage: responder [-p] [HOME]    (HOME defaults to $HOME)
 *   -p  spawn /bin/true and wait for it at every RCPT (one plugin run).
 * build: cc -O2 -o responder responder.c
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char in[8192], out[4096], msg[65536], head[16384], me[256], helo[256] = "unknown";
static size_t in_len, in_pos, out_len, msg_len, head_len;
static int have_mail, rcpts, plugin, failed;

static void flush_out(void) {
    for (size_t done = 0; done < out_len;) {
        ssize_t w = write(1, out + done, out_len - done);
        if (w <= 0 && errno != EINTR) _exit(1);
        if (w > 0) done += (size_t)w;
    }
    out_len = 0;
}

/* Queues one reply line; queued replies go out before the next read(2). */
static void reply(const char *s) {
    size_t n = strlen(s);
    if (n > sizeof out - 2) n = sizeof out - 2;
    if (out_len + n + 2 > sizeof out) flush_out();
    memcpy(out + out_len, s, n);
    memcpy(out + out_len + n, "\r\n", 2);
    out_len += n + 2;
}

/* The next line with its LF (a piece, if longer than the buffer); 0 at EOF. */
static size_t get_line(char **line) {
    for (;;) {
        char *lf = memchr(in + in_pos, '\n', in_len - in_pos);
        size_t n = lf ? (size_t)(lf - (in + in_pos)) + 1 : in_len - in_pos;
        if (lf || n == sizeof in) return *line = in + in_pos, in_pos += n, n;
        memmove(in, in + in_pos, n);
        in_len = n, in_pos = 0;
        if (out_len) flush_out();
        ssize_t r = read(0, in + in_len, sizeof in - in_len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        in_len += (size_t)r;
    }
}

/* Appends to the message; a full buffer goes to the tmp/ file. */
static void put(int fd, const char *s, size_t n) {
    if (msg_len + n > sizeof msg) {
        if (fd < 0 || write(fd, msg, msg_len) != (ssize_t)msg_len) failed = 1;
        msg_len = 0;
        if (n > sizeof msg) {
            if (fd < 0 || write(fd, s, n) != (ssize_t)n) failed = 1;
            return;
        }
    }
    memcpy(msg + msg_len, s, n);
    msg_len += n;
}

/* The address in "MAIL FROM:<a>" / "RCPT TO:<a>", cut in place; NULL if none. */
static char *address(char *arg) {
    char *a = strchr(arg, '<'), *end;
    if (a) end = strchr(++a, '>');
    else if ((a = strchr(arg, ':'))) a += 1 + strspn(a + 1, " "), end = a + strcspn(a, " ");
    else return NULL;
    if (!end || end - a > 1000) return NULL;
    *end = 0;
    for (char *p = a; *p; p++)
        if (*p == '\r') *p = '?';
    return a;
}

static void data(void) {
    static const char mon[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static unsigned seq;
    char host[256] = "localhost", name[512], tmp[600], new[600], line[1200], *l;
    struct timeval tv;
    struct tm tm;
    size_t n;
    gettimeofday(&tv, NULL);
    gethostname(host, sizeof host - 1);
    host[strcspn(host, "/:")] = 0;
    snprintf(name, sizeof name, "%lld.M%ldP%ldQ%u.%s", (long long)tv.tv_sec,
             (long)tv.tv_usec, (long)getpid(), seq++, host);
    snprintf(tmp, sizeof tmp, "Maildir/tmp/%s", name);
    snprintf(new, sizeof new, "Maildir/new/%s", name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    failed = fd < 0;
    reply("354 go ahead");
    const char *rhost = getenv("TCPREMOTEHOST"), *info = getenv("TCPREMOTEINFO");
    const char *ip = getenv("TCPREMOTEIP"), *local = getenv("TCPLOCALHOST");
    rhost = rhost ? rhost : "unknown", ip = ip ? ip : "unknown";
    local = local ? local : getenv("TCPLOCALIP");
    int same = strcasecmp(helo, rhost) == 0;
    gmtime_r(&tv.tv_sec, &tm);
    n = (size_t)snprintf(line, sizeof line, "Received: from %s%s%s%s (%s%s%s)\n  by %s with "
        "SMTP; %d %s %d %02d:%02d:%02d -0000\n", rhost, same ? "" : " (HELO ",
        same ? "" : helo, same ? "" : ")", info ? info : "", info ? "@" : "", ip,
        local ? local : "unknown", tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900,
        tm.tm_hour, tm.tm_min, tm.tm_sec);
    msg_len = 0;
    put(fd, head, head_len);
    put(fd, line, n < sizeof line ? n : sizeof line - 1);
    while ((n = get_line(&l)) != 3 || memcmp(l, ".\r\n", 3) != 0) {
        if (n == 0) _exit(fd >= 0 ? unlink(tmp), 1 : 1);   /* connection lost */
        if (l[0] == '.') l++, n--;
        if (n >= 2 && l[n - 2] == '\r' && l[n - 1] == '\n') l[n - 2] = '\n', n--;
        put(fd, l, n);
    }
    if (fd >= 0) {
        if (!failed && (write(fd, msg, msg_len) != (ssize_t)msg_len || fsync(fd) != 0)) failed = 1;
        if (close(fd) != 0) failed = 1;
    }
    if (!failed) {
        int dir = open("Maildir/new", O_RDONLY | O_CLOEXEC);
        if (dir < 0 || rename(tmp, new) != 0) failed = 1;
        else if (fsync(dir) != 0) failed = 1, unlink(new);    /* not durable: take it back */
        if (dir >= 0) close(dir);
    }
    if (failed && fd >= 0) unlink(tmp);
    snprintf(line, sizeof line, "250 ok %lld qp %s", (long long)tv.tv_sec, name);
    reply(failed ? "451 qq write error or disk full (#4.3.0)" : line);
    have_mail = rcpts = 0;
}

static int verb(const char *l, const char *v) {
    return strncasecmp(l, v, 4) == 0 && (l[4] == 0 || l[4] == ' ');
}

int main(int argc, char **argv) {
    int i = 1, fd = -1;
    if (i < argc && strcmp(argv[i], "-p") == 0) plugin = 1, i++;
    const char *home = i < argc ? argv[i] : getenv("HOME");
    ssize_t r = -1;
    if ((!home || chdir(home) == 0) && (fd = open("control/me", O_RDONLY)) >= 0)
        r = read(fd, me, sizeof me - 1), close(fd);
    if (r <= 0) return reply("421 unable to read controls (#4.3.0)"), flush_out(), 1;
    me[strcspn(me, "\r\n")] = 0;
    char line[600], *l, *a;
    snprintf(line, sizeof line, "220 %s ESMTP", me);
    reply(line);
    for (size_t n; (n = get_line(&l)) > 0;) {
        l[n - 1] = 0;                        /* the LF (or a piece's last byte) */
        if (n >= 2 && l[n - 2] == '\r') l[n - 2] = 0;
        if (verb(l, "HELO") || verb(l, "EHLO")) {
            a = l + 4 + strspn(l + 4, " ");
            a[strcspn(a, " ")] = 0;
            snprintf(helo, sizeof helo, "%s", a);
            for (char *p = helo; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr(".@%+/=:-", *p)) *p = '?';
            have_mail = rcpts = 0;
            snprintf(line, sizeof line, "250%c%s", toupper((unsigned char)l[0]) == 'H' ? ' ' : '-', me);
            reply(line);
            if (line[3] == '-') reply("250-PIPELINING"), reply("250 8BITMIME");
        } else if (verb(l, "MAIL")) {
            if (!(a = address(l))) { reply("555 syntax error (#5.5.4)"); continue; }
            head_len = (size_t)snprintf(head, sizeof head, "Return-Path: <%s>\n", a);
            have_mail = 1, rcpts = 0;
            reply("250 ok");
        } else if (verb(l, "RCPT")) {
            if (!have_mail) { reply("503 MAIL first (#5.5.1)"); continue; }
            if (!(a = address(l))) { reply("555 syntax error (#5.5.4)"); continue; }
            if (head_len + strlen(a) + 20 > sizeof head) { reply("452 too many recipients (#4.5.3)"); continue; }
            if (plugin) {
                pid_t pid;
                char *args[] = {"true", NULL};
                if (posix_spawn(&pid, "/bin/true", NULL, NULL, args, environ) == 0)
                    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
            }
            head_len += (size_t)sprintf(head + head_len, "X-Original-To: <%s>\n", a);
            rcpts++;
            reply("250 ok");
        } else if (verb(l, "DATA")) {
            if (!have_mail) reply("503 MAIL first (#5.5.1)");
            else if (!rcpts) reply("503 RCPT first (#5.5.1)");
            else data();
        } else if (verb(l, "RSET")) {
            have_mail = rcpts = 0;
            reply("250 flushed");
        } else if (verb(l, "NOOP")) {
            reply("250 ok");
        } else if (verb(l, "QUIT")) {
            snprintf(line, sizeof line, "221 %s", me);
            return reply(line), flush_out(), 0;
        } else {
            reply("502 unimplemented (#5.5.1)");
        }
    }
    flush_out();
    return 1;
}
