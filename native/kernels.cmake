# CPU Adam/AdamW kernels (issue #3). Included by CMakeLists.txt before the
# library target is defined: sources are appended to TM_SOURCES and each ISA
# kernel gets its own flags, so only that translation unit may use them.
#
# [Note: -ffp-contract=off on every kernel file keeps the compiler from fusing
#  a*b+c into FMA differently per ISA; the scalar, AVX2 and AVX-512 kernels
#  then produce bit-identical Adam results and the scalar one is an exact
#  oracle. The kernels are memory-bound, so FMA would buy no speed here.]
list(APPEND TM_SOURCES
  native/src/adam.c
  native/src/adam_pool.c
  native/src/adam_scalar.c
  native/src/adam_quant.c
)
set_source_files_properties(native/src/adam_scalar.c native/src/adam.c native/src/adam_quant.c
  PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  list(APPEND TM_SOURCES native/src/adam_avx2.c native/src/adam_avx512.c)
  set_source_files_properties(native/src/adam_avx2.c
    PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-ffp-contract=off")
  set_source_files_properties(native/src/adam_avx512.c
    PROPERTIES COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mfma;-mf16c;-ffp-contract=off")
endif()
