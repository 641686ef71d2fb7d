/* Export macro shared by tiermem's public headers. */
#ifndef TIERMEM_API_H
#define TIERMEM_API_H
#if defined(TM_BUILDING_LIBRARY)
#define TM_API __attribute__((visibility("default")))
#else
#define TM_API
#endif
#endif
