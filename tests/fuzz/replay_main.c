/*
** replay_main.c: a main() for the fuzz targets in builds without libFuzzer
** (gcc, the ASan build): runs LLVMFuzzerTestOneInput once on each file
** named, or on every file of each directory named, in name order. The
** target aborts on a failure; an empty or missing corpus fails too, so a
** wrong path cannot pass silently.
**   replay_fuzz_framebuf tests/fuzz/corpus/fuzz_framebuf
*/
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 0, or 1 when the file cannot be read */
static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) { perror(path); return 1; }
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  if (buf == NULL) { fclose(f); return 1; }
  for (;;) {
    if (n == cap) {
      uint8_t *p = realloc(buf, cap *= 2);
      if (p == NULL) { free(buf); fclose(f); return 1; }
      buf = p;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    if (got == 0) break;
    n += got;
  }
  int err = ferror(f);
  fclose(f);
  if (err) { fprintf(stderr, "%s: read error\n", path); free(buf); return 1; }
  /* a copy of exactly n bytes, so ASan sees a read past the input */
  uint8_t *copy = malloc(n ? n : 1);
  if (copy == NULL) { free(buf); return 1; }
  memcpy(copy, buf, n);
  free(buf);
  LLVMFuzzerTestOneInput(copy, n);
  free(copy);
  return 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* replays every regular file in dir; returns how many, or -1 on error */
static long replay_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) { perror(dir); return -1; }
  char **names = NULL;
  size_t n = 0, cap = 0;
  long count = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) {
      char **p = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof *names);
      if (p == NULL) { count = -1; goto done; }
      names = p;
    }
    if ((names[n] = strdup(e->d_name)) == NULL) { count = -1; goto done; }
    n++;
  }
  qsort(names, n, sizeof *names, by_name);
  for (size_t i = 0; i < n && count >= 0; i++) {
    size_t len = strlen(dir) + strlen(names[i]) + 2;
    char *path = malloc(len);
    struct stat st;
    if (path == NULL) { count = -1; break; }
    snprintf(path, len, "%s/%s", dir, names[i]);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
      if (replay_file(path)) count = -1;
      else count++;
    }
    free(path);
  }
done:
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  closedir(d);
  return count;
}

int main(int argc, char **argv) {
  long total = 0;
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    struct stat st;
    long n;
    if (stat(argv[i], &st) != 0) { perror(argv[i]); return 1; }
    if (S_ISDIR(st.st_mode)) n = replay_dir(argv[i]);
    else n = replay_file(argv[i]) ? -1 : 1;
    if (n < 0) return 1;
    if (n == 0) { fprintf(stderr, "%s: no inputs\n", argv[i]); return 1; }
    total += n;
  }
  printf("replayed %ld inputs, all passed\n", total);
  return 0;
}
