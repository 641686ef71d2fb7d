# CRC32C for the store's extent checksums. Included by CMakeLists.txt before
# the library target is defined: sources are appended to TM_SOURCES, and only
# the SSE4.2 kernel's translation unit gets -msse4.2 -mpclmul; it runs only
# where CPUID reports both (see native/src/checksum.c).
list(APPEND TM_SOURCES native/src/checksum.c)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  list(APPEND TM_SOURCES native/src/checksum_sse42.c)
  set_source_files_properties(native/src/checksum_sse42.c
    PROPERTIES COMPILE_OPTIONS "-msse4.2;-mpclmul")
endif()
