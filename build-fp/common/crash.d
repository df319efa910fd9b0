build-fp/common/crash.o: common/crash.c common/crash.h
common/crash.h:
