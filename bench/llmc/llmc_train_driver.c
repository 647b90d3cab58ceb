// Drives llm.c's CPU trainer for a fixed number of steps at a chosen batch size and sequence
// length. llm.c's own main() hard-codes its checkpoint and data paths, B = 4, T = 64, and
// interleaves validation and sampling with training; this driver compiles their train_gpt2.c
// unchanged (with TESTING defined, which leaves their main() out, as their test_gpt2.c does) and
// runs exactly their training step (dataloader_next_batch, gpt2_forward, gpt2_zero_grad,
// gpt2_backward, gpt2_update with their main()'s hyper-parameters), timed and printed the way their
// main() does. Built by scripts/bench_llmc.sh:
//   gcc -Ofast -march=native -fopenmp -DOMP -I<llm.c checkout> llmc_train_driver.c -lm
// Usage: llmc_train_driver <checkpoint.bin> <train_tokens.bin> <B> <T> <steps>
#define TESTING
#include "train_gpt2.c"

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s <checkpoint.bin> <train_tokens.bin> <B> <T> <steps>\n", argv[0]);
    return 2;
  }
  const char* checkpoint = argv[1];
  const char* tokens = argv[2];
  const int B = atoi(argv[3]);
  const int T = atoi(argv[4]);
  const int steps = atoi(argv[5]);
  if (B <= 0 || T <= 0 || steps <= 0) {
    fprintf(stderr, "B, T and steps must be positive (got %d, %d, %d)\n", B, T, steps);
    return 2;
  }
#ifdef OMP
  printf("OpenMP threads: %d\n", omp_get_max_threads());
#endif
  GPT2 model;
  gpt2_build_from_checkpoint(&model, checkpoint);
  if (T > model.config.max_seq_len) {
    fprintf(stderr, "T = %d exceeds the checkpoint's max_seq_len %d\n", T,
            model.config.max_seq_len);
    return 2;
  }
  DataLoader loader;
  dataloader_init(&loader, tokens, B, T, 0, 1, 1);
  printf("B=%d T=%d steps=%d\n", B, T, steps);
  struct timespec start, end;
  for (int step = 0; step < steps; step++) {
    clock_gettime(CLOCK_MONOTONIC, &start);
    dataloader_next_batch(&loader);
    gpt2_forward(&model, loader.inputs, loader.targets, B, T);
    gpt2_zero_grad(&model);
    gpt2_backward(&model);
    gpt2_update(&model, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, step + 1);
    clock_gettime(CLOCK_MONOTONIC, &end);
    double time_elapsed_s = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9;
    printf("step %d: train loss %f (took %f ms)\n", step, model.mean_loss, time_elapsed_s * 1000);
    fflush(stdout);
  }
  dataloader_free(&loader);
  gpt2_free(&model);
  return 0;
}
