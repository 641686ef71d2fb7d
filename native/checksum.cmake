# CRC32C for the store's extent checksums. Included by CMakeLists.txt before
# the library target is defined: sources are appended to TM_SOURCES, and only
# the kernels' translation units get ISA flags: -msse4.2 -mpclmul for the
# SSE4.2 one, the AVX-512 + VPCLMULQDQ set for the folding one. Each runs
# only where CPUID (and XCR0) report its features (see native/src/checksum.c).
list(APPEND TM_SOURCES native/src/checksum.c)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  list(APPEND TM_SOURCES native/src/checksum_sse42.c)
  set_source_files_properties(native/src/checksum_sse42.c
    PROPERTIES COMPILE_OPTIONS "-msse4.2;-mpclmul")
  list(APPEND TM_SOURCES native/src/checksum_avx512.c)
  set_source_files_properties(native/src/checksum_avx512.c
    PROPERTIES COMPILE_OPTIONS
    "-mavx512f;-mavx512bw;-mavx512vl;-mvpclmulqdq;-mpclmul;-msse4.2")
endif()
