/*
 * rcpt-check.c - refuse recipient addresses that are too long or listed in
 * a file
 *
 * Hook:      [rcpt]
 *
 * Build (any C99 compiler; no library beyond libc):
 *     make -C plugins-examples/c
 * or
 *     cc -O2 -Wall -o plugins-examples/c/rcpt-check plugins-examples/c/rcpt-check.c
 *
 * smtpplugins:
 *     [rcpt]
 *     plugins-examples/c/rcpt-check -f control/badrcptto
 *
 * Arguments:
 *   -f FILE  refuse the recipients listed in FILE (relative to the home),
 *            one a line: a whole address (user@example.com) or @domain for
 *            every address of a domain, compared without regard to ASCII
 *            case. Blanks around an entry are ignored; empty lines and lines
 *            starting with '#' are skipped. Good for addresses that were
 *            given up or only ever receive spam. A file that cannot be read
 *            is logged and refuses nothing.
 *
 * Reads:     SMTPRCPTTO   the recipient being asked for
 *
 * Prints nothing for an acceptable recipient, or one of
 *     E553 sorry, that address is too long (#5.1.3)
 *         the local part (before the last '@') is longer than 64 octets,
 *         the domain longer than 255, or the whole address longer than 254:
 *         the limits of RFC 5321 section 4.5.3.1 (a path of 256 octets
 *         includes the angle brackets). The server itself takes addresses
 *         of up to 900 octets.
 *     E550 sorry, no mailbox here by that name (#5.1.1)
 *         the address is listed in the -f file
 * Both refuse only this RCPT; the client may go on with other recipients.
 *
 * Exit status: always 0; problems are logged on stderr and refuse nothing.
 *
 * Test by hand, from the server's home directory:
 *     env -i SMTPRCPTTO=user@example.test plugins-examples/c/rcpt-check     # nothing
 *     echo @example.test > /tmp/bad
 *     env -i SMTPRCPTTO=User@Example.TEST plugins-examples/c/rcpt-check -f /tmp/bad   # E550 ...
 */

#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LOCAL_PART 64
#define MAX_DOMAIN 255
#define MAX_ADDRESS 254

static const char TOO_LONG[] = "E553 sorry, that address is too long (#5.1.3)";
static const char LISTED[] = "E550 sorry, no mailbox here by that name (#5.1.1)";

static void log_line(const char *message, const char *detail)
{
    fprintf(stderr, "rcpt-check: %s%s\n", message, detail ? detail : "");
}

/* Whether the address breaks one of the RFC 5321 length limits. */
static int too_long(const char *address)
{
    size_t length = strlen(address);
    const char *at = strrchr(address, '@');
    size_t local_part = at ? (size_t)(at - address) : length;
    size_t domain = at ? length - local_part - 1 : 0;
    return length > MAX_ADDRESS || local_part > MAX_LOCAL_PART || domain > MAX_DOMAIN;
}

/* Lower-cases ASCII letters in place; other bytes are left alone. */
static void lower_ascii(char *text)
{
    for (; *text; text++)
        if (*text >= 'A' && *text <= 'Z')
            *text = (char)(*text - 'A' + 'a');
}

/* The line with blanks and line end removed on both sides, in place. */
static char *trim(char *line)
{
    size_t length;
    while (*line == ' ' || *line == '\t')
        line++;
    length = strlen(line);
    while (length > 0 && strchr(" \t\r\n", line[length - 1]))
        line[--length] = '\0';
    return line;
}

/* 1 if the lower-cased address is listed in the file, 0 if not, -1 if the
 * file cannot be read. */
static int listed(const char *path, const char *address)
{
    const char *at = strrchr(address, '@');
    FILE *file = fopen(path, "r");
    char *line = NULL;
    size_t size = 0;
    int found = 0;

    if (!file)
        return -1;
    while (!found && getline(&line, &size, file) != -1) {
        char *entry = trim(line);
        if (*entry == '\0' || *entry == '#')
            continue;
        lower_ascii(entry);
        if (strcmp(entry, address) == 0)
            found = 1;
        else if (entry[0] == '@' && at && strcmp(entry, at) == 0)
            found = 1;
    }
    if (ferror(file))
        found = -1;
    free(line);
    fclose(file);
    return found;
}

int main(int argc, char **argv)
{
    const char *list = NULL;
    const char *recipient;
    char *address;
    int option;

    opterr = 0;
    while ((option = getopt(argc, argv, "f:")) != -1) {
        if (option == 'f')
            list = optarg;
        else
            log_line("usage: rcpt-check [-f FILE]; bad arguments ignored", NULL);
    }

    recipient = getenv("SMTPRCPTTO");
    if (!recipient) {
        log_line("SMTPRCPTTO is not set; list this plugin under [rcpt]", NULL);
        return 0;
    }
    if (too_long(recipient)) {
        puts(TOO_LONG);
        return 0;
    }
    if (!list)
        return 0;

    address = strdup(recipient);
    if (!address) {
        log_line("out of memory; recipient not checked", NULL);
        return 0;
    }
    lower_ascii(address);
    switch (listed(list, address)) {
    case 1:
        puts(LISTED);
        break;
    case -1:
        log_line("cannot read the recipient list; nothing refused because of it: ", list);
        break;
    default:
        break;
    }
    free(address);
    return 0;
}
