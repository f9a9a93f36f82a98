/* The machine code of fray.wire.objects.stream_copy (the hex string _X86_64_CODE there).
 *
 *   void stream_copy(void *dst, const void *src, size_t groups)   (System V: rdi, rsi, rdx)
 *
 * Copies groups * 16384 bytes from src to dst with non-temporal stores (they go to memory
 * without first reading each destination line into the cache). Each 16 KiB group is four 4 KiB
 * pages copied side by side, one 64-byte line of each page per round: four streams for the
 * hardware prefetchers instead of one. dst must be 16-byte aligned, src need not be; the two
 * ranges must not overlap.
 * SSE2 only (every x86-64 CPU). Clobbers rcx, rdx, rsi, rdi, xmm0-xmm7, as the ABI allows.
 *
 * Regenerate the hex string (tests/test_object_stream_copy.py checks that it matches):
 *   as -o /tmp/sc.o stream_copy_x86_64.S && objcopy -O binary -j .text /tmp/sc.o /tmp/sc.bin
 *   xxd -p /tmp/sc.bin | tr -d '\n'
 */
.intel_syntax noprefix
.text
.globl stream_copy
stream_copy:
    endbr64                     /* a valid target for indirect calls (a no-op elsewhere) */
    test rdx, rdx
    jz 3f
1:  mov ecx, 64                 /* per group: 64 rounds of one line in each of 4 pages */
2:  movdqu xmm0, [rsi]
    movdqu xmm1, [rsi + 16]
    movdqu xmm2, [rsi + 32]
    movdqu xmm3, [rsi + 48]
    movdqu xmm4, [rsi + 4096]
    movdqu xmm5, [rsi + 4096 + 16]
    movdqu xmm6, [rsi + 4096 + 32]
    movdqu xmm7, [rsi + 4096 + 48]
    movntdq [rdi], xmm0
    movntdq [rdi + 16], xmm1
    movntdq [rdi + 32], xmm2
    movntdq [rdi + 48], xmm3
    movntdq [rdi + 4096], xmm4
    movntdq [rdi + 4096 + 16], xmm5
    movntdq [rdi + 4096 + 32], xmm6
    movntdq [rdi + 4096 + 48], xmm7
    movdqu xmm0, [rsi + 8192]
    movdqu xmm1, [rsi + 8192 + 16]
    movdqu xmm2, [rsi + 8192 + 32]
    movdqu xmm3, [rsi + 8192 + 48]
    movdqu xmm4, [rsi + 12288]
    movdqu xmm5, [rsi + 12288 + 16]
    movdqu xmm6, [rsi + 12288 + 32]
    movdqu xmm7, [rsi + 12288 + 48]
    movntdq [rdi + 8192], xmm0
    movntdq [rdi + 8192 + 16], xmm1
    movntdq [rdi + 8192 + 32], xmm2
    movntdq [rdi + 8192 + 48], xmm3
    movntdq [rdi + 12288], xmm4
    movntdq [rdi + 12288 + 16], xmm5
    movntdq [rdi + 12288 + 32], xmm6
    movntdq [rdi + 12288 + 48], xmm7
    add rsi, 64
    add rdi, 64
    dec ecx
    jnz 2b
    add rsi, 12288              /* the rounds moved one page on; the group is four */
    add rdi, 12288
    dec rdx
    jnz 1b
    sfence                      /* the stores are ordered before the caller's next ones */
3:  ret
